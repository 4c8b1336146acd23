"""The lifted trainer is the same algorithm: one trainer phase with EXACT weights moves a causal LM to the
tabular exact step of its own response distribution.

Setting: the known-equilibrium benchmark's tiny LM, whose responses can be enumerated.  Its distribution
``pi_t`` over the ``n`` valid responses plus the invalid mass is measured exactly (teacher forcing), as is
the reference ``mu`` (a separate, perturbed copy, so that ``pi_t != mu``).  For every registered
algorithm, the signal of the phase is the tabular exact signal of the extended game (its opponents,
including Nash-MD's geometric mixture, OMWU's previous iterate and EGPO's half step, evaluated exactly; APO and
MNPO score responses under the bank's ``previous`` slot, loaded with the reference's weights to match), the
rows are every pair (or every response) with its probability under ``pi_t`` as weight -- no sampling -- and
the trainer's own optimisation (:meth:`NashTrainer.optimise`, the code path of every phase) runs to
convergence.  The LM's new distribution over valid responses must equal the exact step's: the losses only
see valid responses, so the comparison is of the distribution conditioned on validity (ratios).

Excluded: ``online_ipo``, whose tabular definition is one gradient step on the logits (``lift =
"gradient_step"``), a step in table coordinates that has no parameter-space counterpart on an LM.

A second test: a trainer phase and a tabular sampled-mode phase fed the same samples build identical
``LossInputs`` (the one builder, :func:`nashalign.algorithms.base.feedback_inputs`).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nashalign.algorithms import ALGORITHMS, get_algorithm
from nashalign.algorithms.base import State
from nashalign.estimators import Feedback
from nashalign.llm.trainer import NashTrainer, TrainerConfig
from nashalign.solve import exact_signal

#: Adam steps to convergence (measured max errors: 1.5e-6 .. 1.5e-5 at 400 steps; the free mixture 0.5 case
#: converges slower: 1.2e-2 at 400, 4.8e-4 at 1200).
EPOCHS = {"nash_md_mixture": 1200}
HP = {
    "sppo": {"eta": 0.3, "tau": 0.0},
    "spo": {"eta": 0.3, "tau": 0.0, "form": "regression"},  # its pg form's rows would need the invalid mass
    "dno": {"eta": 0.3, "tau": 0.0},
    "mwu": {"eta": 0.3, "tau": 0.0},
    "nash_ema": {"eta": 0.5, "tau": 0.1, "beta": 0.3},
    "apo": {"eta": 0.3, "tau": 0.0, "alpha": 0.5},  # the unregularised rule
    "mnpo": {"eta": 0.5, "tau": 0.1, "lam": 0.4},
}
CASES = sorted(n for n in ALGORITHMS if ALGORITHMS[n].lift == "minimizer") + ["nash_md_mixture"]


def make_alg(case: str):
    if case == "nash_md_mixture":
        return get_algorithm("nash_md", eta=0.5, tau=0.1, mixture=0.5)
    return get_algorithm(case, **HP.get(case, {"eta": 0.5, "tau": 0.1}))


@pytest.fixture(scope="module")
def lm_pair(tiny_lm_dir):
    """(model, reference model, tokenizer): the warmed-up LM and a perturbed frozen copy as mu."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    ref = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model, ref, AutoTokenizer.from_pretrained(tiny_lm_dir)


def fresh_policy(lm_pair):
    from nashalign.llm.policy import CausalLMPolicy

    model, ref, tok = lm_pair
    return CausalLMPolicy(copy.deepcopy(model), tok, reference_model=copy.deepcopy(ref), use_chat_template=False,
                          device="cpu")


def exact_feedback(policy, task, alg, signal: np.ndarray, pi: np.ndarray):
    """Every valid response of every prompt, rows = all ordered pairs (pairwise forms) or the ``n`` responses,
    weighted by their probabilities under ``pi_t``; the exact signal on each."""
    C, n = task.num_prompts, task.num_classes
    responses = policy.encode(task.prompts, [r for rs in task.responses for r in rs],
                              prompt_index=torch.arange(C).repeat_interleave(n))
    ids = torch.arange(C * n).reshape(C, n)
    sig = torch.as_tensor(signal[:, :n], dtype=torch.float32)  # (C, n) valid columns
    rho = torch.as_tensor(pi[:, :n], dtype=torch.float32)
    assert alg.pairwise, f"{alg.name}: every case here uses a pairwise form"
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)  # (n^2,)
    index = torch.stack([ids[:, ii], ids[:, jj]], -1).reshape(-1, 2)  # (C n^2, 2)
    signal_rows = torch.stack([sig[:, ii], sig[:, jj]], -1).reshape(-1, 2)
    weights = (rho[:, ii] * rho[:, jj]).reshape(-1)  # the pair's probability under pi_t
    prompt = torch.arange(C).repeat_interleave(n * n)
    return Feedback(prompt, index, signal_rows, responses, 0, "current"), weights


def valid_conditional(dist: np.ndarray, n: int) -> np.ndarray:
    v = dist[:, :n]
    return np.log(v / v.sum(-1, keepdims=True))


def train_phase(trainer, policy, task, alg, state, phase):
    """One trainer phase on exact feedback for ``state``; returns the exact target's and the LM's new
    valid-conditional log-distributions."""
    from nashalign.llm.synthetic import extended_game, response_distribution

    P = np.asarray(extended_game(task).P)
    signal = np.asarray(exact_signal(P, alg.opponents(state, phase)))  # (C, n + 1)
    # the exact step: rule M's target, or (XPO, an argmin without a mirror form) the tabular update itself
    target = np.asarray(alg.target(state, signal, phase) if hasattr(alg, "target") else alg.update(state, signal).logp)
    pi = np.exp(np.asarray(state.logp))
    fb, weights = exact_feedback(policy, task, alg, signal, pi)
    trainer.optimise(fb, t=state.t, weights=weights)
    return target, response_distribution(policy, task)


@pytest.mark.parametrize("case", CASES)
def test_trainer_phase_with_exact_weights_is_the_exact_step(case, lm_pair, synthetic_task, tmp_path):
    from nashalign.llm.synthetic import response_distribution

    task, alg = synthetic_task, make_alg(case)
    policy = fresh_policy(lm_pair)
    pi0 = response_distribution(policy, task)
    mu = response_distribution(policy, task, model="reference")
    cfg = TrainerConfig(iterations=1, epochs=EPOCHS.get(case, 400), minibatch_size=512, learning_rate=1e-2, max_grad_norm=None,
                        cpu=True, num_threads=1, progress=False, save_final_model=False, output_dir=str(tmp_path))
    trainer = NashTrainer(policy, alg, task.oracle(), task.prompts, cfg)
    state = alg.init(np.log(pi0), np.log(mu))
    if state.memory:  # a previous iterate / EMA that differs from pi_t: mu's distribution
        state = State(0, state.logp, state.logmu, {k: np.log(mu) for k in state.memory})
    if alg.uses_previous:  # APO / MNPO score the responses under theta_{t-1}: the bank's slot holds mu's weights
        trainer.bank.load_state_dict({"previous": dict(lm_pair[1].named_parameters())})
    n, dist = task.num_classes, pi0
    for phase in range(alg.phases):
        if phase > 0:  # EGPO: the half step is the LM's own; theta_t (and the optimizer) come back from the bank
            state = alg.accept(state, np.log(dist), phase - 1)
            trainer.bank.load("theta_t")
            trainer.bank.restore_optimizer(trainer.optimizer)
        elif alg.phases > 1:
            trainer.bank.store("theta_t")
            trainer.bank.store_optimizer(trainer.optimizer)
        target, dist = train_phase(trainer, policy, task, alg, state, phase)
        err = np.abs(valid_conditional(dist, n) - valid_conditional(np.exp(target), n)).max()
        moved = np.abs(valid_conditional(np.exp(target), n) - valid_conditional(pi0, n)).max()
        assert moved > 0.05, f"{case}: the exact step barely moves ({moved:.3g}); the test would prove nothing"
        assert err < 2e-3, f"{case} phase {phase}: max |log pi_LM - log pi_exact| = {err:.3g} (step size {moved:.3g})"


def test_trainer_and_sampled_mode_build_identical_loss_inputs(load_policy, synthetic_task, tmp_path, monkeypatch):
    """Fed the same samples, the LLM trainer and the tabular sampled mode build the same LossInputs."""
    import nashalign.algorithms.base as base
    import nashalign.llm.trainer as trainer_mod
    import nashalign.sampled as sampled_mod
    from nashalign.estimators import estimate
    from nashalign.llm.synthetic import extended_game, response_distribution
    from nashalign.sampled import SampledRunner

    task, alg = synthetic_task, get_algorithm("omd", eta=0.5, tau=0.1)
    policy = load_policy()
    pi, mu = response_distribution(policy, task), response_distribution(policy, task, model="reference")
    C = task.num_prompts
    draws = torch.tensor([0, 1, 2, 2, 1, 0])  # response ids (class j of prompt c) for pairs of prompts 0, 1, 2
    answers = torch.tensor([0.25, 0.5, 0.75])
    captured = {}

    def capture(name):
        def builder(*args, **kwargs):
            captured[name] = base.feedback_inputs(*args, **kwargs)
            return captured[name]
        return builder

    # the tabular side: the table is the LM's extended distribution; its sampler and oracle return fixed values
    monkeypatch.setattr(sampled_mod, "feedback_inputs", capture("sampled"))
    runner = SampledRunner(extended_game(task, mu), alg, oracle=lambda p, a, b: answers, batch=3, inner_steps=1,
                           seed=0)
    monkeypatch.setattr(runner, "_sampler", lambda ctx, logp: lambda opp, idx, k: draws)
    monkeypatch.setattr(sampled_mod.torch, "randint", lambda *a, **k: torch.arange(C))
    runner._phase(alg.init(np.log(pi), np.log(mu)), 0)
    monkeypatch.undo()

    # the trainer side: the same three prompts, the same responses as strings, the same oracle answers
    monkeypatch.setattr(trainer_mod, "feedback_inputs", capture("trainer"))
    cfg = TrainerConfig(iterations=1, epochs=2, cpu=True, progress=False, save_final_model=False,
                        output_dir=str(tmp_path))  # two epochs: the anchor gets its own pass (what is compared)
    trainer = NashTrainer(policy, alg, lambda p, a, b: answers, task.prompts, cfg)
    texts = [task.responses[c][int(j)] for c, j in zip(torch.arange(C).repeat_interleave(2).tolist(), draws)]
    samples = policy.encode(task.prompts, texts, prompt_index=torch.arange(C).repeat_interleave(2))
    fb = estimate("pair", alg.neural_opponents(0, 0), task.prompts, lambda o, i, k: samples, trainer.oracle,
                  pairwise_rows=alg.pairwise)
    trainer.optimise(fb, t=0)
    a, b = captured["sampled"], captured["trainer"]
    assert torch.equal(a.signal.float(), b.signal.float())
    for field in ("logp_anchor", "logp_ref", "logp_behavior"):
        torch.testing.assert_close(getattr(a, field).float(), getattr(b, field).float(), rtol=0, atol=2e-5)
    assert a.weights is None and b.weights is None and a.step == b.step == 0
