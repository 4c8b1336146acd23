"""Weight sync: at every sample vLLM holds exactly the parameters the algorithm names (float32, to 1e-4 nats).

* after a training step, vLLM's ``log pi(y | x)`` of a fixed set of responses equals the HF policy's, for full
  fine-tuning and LoRA (pushed merged), and the step really moved the policy;
* for every registered algorithm, two iterations with ``generation=vllm``: at EVERY call of the sampler, the engine's
  log-probs of the fixed responses equal the HF log-probs of the parameters the trainer holds at that moment
  (``pi_t``, EGPO's ``theta_t`` and half step, OMWU's previous iterate, Nash-EMA's average: the opponent bank
  swaps them into the model in place), and each opponent kind was sampled from.
"""

from __future__ import annotations

import pytest
import torch

from nashalign.algorithms import ALGORITHMS, get_algorithm
from nashalign.llm.trainer import NashTrainer, TrainerConfig

TOL = 1e-4
TINY = dict(
    iterations=1,
    prompts_per_iteration=3,
    max_new_tokens=4,
    epochs=1,
    minibatch_size=4,
    learning_rate=5e-2,
    cpu=True,
    progress=False,
    save_final_model=False,
    track_win_rate=True,
    generation="vllm",
)
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}


def make_algorithm(name: str):
    cls = ALGORITHMS[name]
    return get_algorithm(name, eta=0.5, tau=0.0 if cls.tau_rule == "zero" else 0.1)


def fixed_responses(policy, task):
    """Every valid response of every prompt plus an invalid one (two valid words glued: 10-15 nats less likely).

    The absolute float32 rounding of a sum of token log-probs grows with its magnitude (two kernels, vLLM's and
    torch's, round differently: ~1e-4 at -50 nats), so the 1e-4 check is on responses of the size the policy
    actually samples, not on arbitrary strings of a few hundred nats.
    """
    prompts, responses = [], []
    for p, rs in zip(task.prompts, task.responses):
        for r in (*rs, rs[0] + rs[1]):
            prompts.append(p)
            responses.append(r)
    return policy.encode(prompts, responses)


def test_sync_after_a_training_step_matches_hf(load_policy, task, tmp_path, vllm_options):
    """Full fine-tuning: one Nash-MD step, then vLLM's log-probs of fixed responses == HF's to 1e-4."""
    policy = load_policy()
    fixed = fixed_responses(policy, task)
    before = policy.sequence_logprobs(fixed)
    trainer = NashTrainer(
        policy,
        make_algorithm("online_ipo"),
        task.oracle(),
        task.prompts,
        TrainerConfig(**TINY, vllm=vllm_options, output_dir=str(tmp_path)),
    )
    trainer.step()
    gen = trainer.sampler
    assert gen.pushes >= 2  # before the first sample, and again for pi_{t+1} (the win-rate sample)
    gen.sync(policy)
    hf = policy.sequence_logprobs(fixed).double()
    assert (hf - before.double()).abs().max() > 1e-2  # the step moved the policy
    vl = gen.sequence_logprobs(policy, fixed)
    assert (vl - hf).abs().max() < TOL


def test_lora_sync_pushes_the_merged_adapter(load_policy, task, tmp_path, vllm_options):
    """LoRA: after a step the adapter is non-zero; the engine (plain model, merged weights) matches HF to 1e-4."""
    policy = load_policy(lora=LORA)
    fixed = fixed_responses(policy, task)
    mu = policy.sequence_logprobs(fixed, model="reference").double()
    cfg = TrainerConfig(**TINY, lora=LORA, vllm=vllm_options, output_dir=str(tmp_path))
    trainer = NashTrainer(policy, make_algorithm("online_ipo"), task.oracle(), task.prompts, cfg)
    trainer.step()
    hf = policy.sequence_logprobs(fixed).double()
    assert (hf - mu).abs().max() > 1e-3  # the adapter changed the policy
    trainer.sampler.sync(policy)
    vl = trainer.sampler.sequence_logprobs(policy, fixed)
    assert (vl - hf).abs().max() < TOL
    # and the export under a disabled adapter is mu itself
    with policy.model.disable_adapter():
        trainer.sampler.weights_changed()
        trainer.sampler.sync(policy)
        assert (trainer.sampler.sequence_logprobs(policy, fixed) - mu).abs().max() < TOL


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_sample_comes_from_the_policy_the_algorithm_names(
    name, load_policy, task, tmp_path, monkeypatch, vllm_options
):
    """Two iterations of each algorithm with generation=vllm; the engine is checked at every sampler call."""
    from nashalign.llm.vllm_backend import VLLMSampler

    policy = load_policy()
    fixed = fixed_responses(policy, task)
    seen: list[tuple[str, float, float]] = []
    original = VLLMSampler.__call__

    def checked(self, pol, prompts, k=1, *, mixture=0.0, weights="current", **settings):
        out = original(self, pol, prompts, k, mixture=mixture, weights=weights, **settings)
        if mixture == 0.0:
            hf = pol.sequence_logprobs(fixed).double()
            err = float((self.sequence_logprobs(pol, fixed) - hf).abs().max())
            seen.append((weights, err, float(hf.sum())))
        else:
            seen.append(("mixture", 0.0, float("nan")))
        return out

    monkeypatch.setattr(VLLMSampler, "__call__", checked)
    alg = make_algorithm(name)
    # lr 1e-2 (the trainer tests' rate): at 5e-2 SPO's second step drives one EOS logit far enough out that
    # the two kernels' float32 rounding differ by 1.05e-4 nats on that token (measured), the 1e-4 bound's edge.
    cfg = TrainerConfig(**{**TINY, "iterations": 2, "learning_rate": 1e-2}, vllm=vllm_options, output_dir=str(tmp_path))
    trainer = NashTrainer(policy, alg, task.oracle(), task.prompts, cfg)
    trainer.train()
    assert seen, "the sampler was never called"
    assert max(err for _, err, _ in seen) < TOL, seen
    kinds = {o.kind for t in range(2) for p in range(alg.phases) for o in alg.neural_opponents(t, p)}
    sampled = {w for w, _, _ in seen}
    assert kinds - {"current"} <= sampled  # each opponent kind was sampled (mixture: by the HF sampler)
    # the engine held different parameters at different samples (it was re-synced, not frozen at pi_0)
    assert len({round(s, 4) for _, _, s in seen if s == s}) >= 2


def test_bad_vllm_options_raise_clear_errors():
    from nashalign.llm.generation import VLLMOptions

    with pytest.raises(ValueError, match="trainer.vllm.mode"):
        VLLMOptions(mode="remote")
    with pytest.raises(ValueError, match="server_url"):
        VLLMOptions(mode="server")
    with pytest.raises(ValueError, match="unknown trainer.vllm"):
        VLLMOptions.from_mapping({"gpu_mem": 0.5})
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMOptions(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="trainer.generation"):
        TrainerConfig(generation="sglang")
    with pytest.raises(ValueError, match="weights must be one of"):
        from nashalign.llm.vllm_backend import VLLMSampler

        VLLMSampler(None, VLLMOptions(), engine=object())(None, ["x"], 1, weights="theta")


def test_importing_nashalign_llm_does_not_import_vllm():
    import subprocess
    import sys

    code = "import sys, nashalign, nashalign.llm, nashalign.llm.generation, nashalign.llm.trainer; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_samples_have_the_hf_layout(load_policy, task, vllm_generator):
    """vLLM samples: prompt-major rows, EOS inside the mask, pad after it, log-probs computable by HF."""
    policy = load_policy()
    gen = vllm_generator(policy)
    s = gen(policy, task.prompts, 5, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert s.prompt_index.tolist() == [i for i in range(3) for _ in range(5)]
    assert s.response_ids.shape[0] == 15 and s.response_ids.shape[1] <= 4
    eos = policy.eos_token_ids[0]
    for ids, m, fin in zip(s.response_ids, s.response_mask, s.finished):
        n = int(m.sum())
        assert n >= 1 and bool(fin) == (int(ids[n - 1]) == eos)
        assert (ids[n:] == policy.pad_token_id).all()
    again = gen(policy, task.prompts, 5, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.response_ids, again.response_ids)  # seeded by the trainer's generator
    assert torch.isfinite(policy.sequence_logprobs(s)).all()


@pytest.mark.parametrize("name", ["egpo", "omwu"])
def test_resumed_vllm_run_equals_the_uninterrupted_one(name, load_policy, task, tmp_path, vllm_options):
    """Checkpoint after iteration 1, resume in a new trainer: the engine is re-synced and the run ends identical
    (vLLM's per-sample seeds come from the trainer's checkpointed generator)."""
    cfg = dict(TINY, iterations=2, learning_rate=1e-2, vllm=vllm_options, save_every=1)
    a = load_policy()
    NashTrainer(
        a, make_algorithm(name), task.oracle(), task.prompts, TrainerConfig(**cfg, output_dir=str(tmp_path / "a"))
    ).train()
    b = load_policy()
    first = NashTrainer(
        b, make_algorithm(name), task.oracle(), task.prompts, TrainerConfig(**cfg, output_dir=str(tmp_path / "b"))
    )
    first.train(stop_after=1)
    c = load_policy()
    resumed = NashTrainer(
        c,
        make_algorithm(name),
        task.oracle(),
        task.prompts,
        TrainerConfig(**cfg, resume=True, output_dir=str(tmp_path / "b")),
    )
    assert resumed.iteration == 1
    resumed.train()
    for (n, p), (_, q) in zip(a.model.named_parameters(), c.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)
