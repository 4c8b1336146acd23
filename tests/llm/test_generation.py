"""The sampler protocol of ``NashTrainer`` (``nashalign.llm.generation``), checked without vLLM.

:class:`~nashalign.llm.vllm_backend.VLLMSampler` runs here on a FAKE engine that keeps a copy of every weight push
and draws seeded random tokens: the real engine is exercised in ``tests/vllm_backend`` (vllm venv); what is tested
here is the trainer's half of the weight sync, for every registered algorithm:

* at every sampler call the engine holds exactly the parameters in the policy's model at that moment, i.e. the
  ones the opponent bank swapped in for the kind the algorithm names (``pi_t``, EGPO's ``theta_t`` / half step,
  OMWU's previous iterate, Nash-EMA's average), and every opponent kind is labelled and sampled;
* a change the in-place version counters cannot see (fused optimizer kernels, ``.data`` writes) is pushed only
  after ``weights_changed()``, which the trainer calls after every optimizer phase; ``release()`` before each;
* a sampler passed to the trainer and ``trainer.generation=vllm`` together raise.
"""

from __future__ import annotations

import pytest
import torch
from tiny_settings import TINY  # noqa: E402

from nashalign.algorithms import ALGORITHMS, get_algorithm
from nashalign.algorithms.base import OPPONENT_KINDS
from nashalign.llm._decode import HFSampler
from nashalign.llm.generation import VLLMOptions
from nashalign.llm.trainer import NashTrainer, TrainerConfig


class FakeEngine:
    """Stands in for a vLLM engine: remembers the pushed weights and, per request, draws one of ``candidates``
    (token ids of the task's valid responses + EOS) or a random token string, seeded by the request's seed."""

    def __init__(self, vocab: int, candidates: list[list[int]]) -> None:
        self.vocab, self.candidates, self.held, self.can_sleep, self.sleeps = vocab, candidates, None, True, 0

    def load_weights(self, named):
        self.held = {n: t.detach().clone() for n, t in named}

    def _one(self, seed: int, max_new: int) -> list[int]:
        g = torch.Generator().manual_seed(int(seed))
        j = int(torch.randint(0, len(self.candidates) + 1, (1,), generator=g))
        if j < len(self.candidates):
            return self.candidates[j][:max_new]
        return torch.randint(0, self.vocab, (max_new,), generator=g).tolist()

    def generate(self, prompt_ids, k, seeds, settings, stop):
        per_prompt = [seeds[i * k : (i + 1) * k] for i in range(len(prompt_ids))]
        return [[self._one(s, settings.max_new_tokens) for s in ss] for ss in per_prompt]

    def sleep(self):
        self.sleeps += 1


def make_engine(policy, task) -> FakeEngine:
    words = policy.encode([p for p, rs in zip(task.prompts, task.responses) for _ in rs],
                          [r for rs in task.responses for r in rs])
    cands = [ids[m.bool()].tolist() for ids, m in zip(words.response_ids, words.response_mask)]
    return FakeEngine(len(policy.tokenizer), cands)


def fake_sampler(policy, task):
    from nashalign.llm.vllm_backend import VLLMSampler

    return VLLMSampler(policy, VLLMOptions(), engine=make_engine(policy, task))


def holds_the_model(engine, model) -> bool:
    from nashalign.llm.vllm_backend import export_weights

    return all(torch.equal(engine.held[n], t) for n, t in export_weights(model))


def make_algorithm(name: str):
    return get_algorithm(name, eta=0.5, tau=0.0 if ALGORITHMS[name].tau_rule == "zero" else 0.1)


def run_checked(name, policy, task, tmp_path):
    """Two iterations of ``name`` on the fake engine: ``(alg, sampler, [(kind, engine == model, sum theta)],
    [weights_changed calls])``, the check made after every sampler call."""
    from nashalign.llm.vllm_backend import VLLMSampler

    seen: list[tuple[str, bool, float]] = []
    changed = []

    class Checked(VLLMSampler):
        def __call__(self, pol, prompts, k=1, **kw):
            out = super().__call__(pol, prompts, k, **kw)
            ok = kw.get("mixture", 0.0) > 0 or holds_the_model(self.engine, pol.model)
            seen.append((kw["weights"], ok, float(sum(p.detach().double().sum() for p in pol.model.parameters()))))
            return out

        def weights_changed(self):
            changed.append(len(seen))
            super().weights_changed()

    sampler = Checked(policy, VLLMOptions(), engine=make_engine(policy, task))
    alg = make_algorithm(name)
    cfg = TrainerConfig(**TINY, output_dir=str(tmp_path))
    NashTrainer(policy, alg, task.oracle(), task.prompts[:2], cfg, sampler=sampler).train()
    return alg, sampler, seen, changed


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_engine_holds_the_policy_the_algorithm_names_at_every_sample(name, load_policy, synthetic_task, tmp_path):
    alg, sampler, seen, changed = run_checked(name, load_policy(), synthetic_task, tmp_path)
    assert seen and all(ok for _, ok, _ in seen), seen
    kinds = {o.kind for t in range(2) for p in range(alg.phases) for o in alg.neural_opponents(t, p)}
    assert kinds <= {w for w, _, _ in seen} <= set(OPPONENT_KINDS)  # each kind sampled, under its own label
    assert len({round(s, 6) for _, _, s in seen}) >= 2  # the engine followed the weights, not frozen at pi_0
    assert sampler.engine.sleeps == 2 * alg.phases  # release() before every optimizer phase
    assert len(changed) == 2 * (alg.phases + 1)  # after every optimizer phase and at the end of each iteration


@pytest.mark.parametrize("name", ["egpo", "omwu", "nash_ema"])
def test_the_check_fails_when_the_key_ignores_the_bank(name, load_policy, synthetic_task, tmp_path, monkeypatch):
    """Power: keyed only by the weights_changed counter, the engine misses the bank's swaps."""
    from nashalign.llm.vllm_backend import VLLMSampler

    monkeypatch.setattr(VLLMSampler, "_key", lambda self, policy, weights: (id(policy.model), self._version))
    _, _, seen, _ = run_checked(name, load_policy(), synthetic_task, tmp_path)
    assert not all(ok for _, ok, _ in seen)


def test_weights_changed_is_what_catches_changes_the_version_counters_miss(load_policy, synthetic_task):
    policy = load_policy()
    sampler = fake_sampler(policy, synthetic_task)
    sampler.engine.can_sleep = False
    prompts = synthetic_task.prompts[:2]
    sampler(policy, prompts, 1, max_new_tokens=2)
    assert sampler.pushes == 1 and holds_the_model(sampler.engine, policy.model)
    sampler(policy, prompts, 1, max_new_tokens=2)
    assert sampler.pushes == 1  # nothing changed: no push
    p = next(policy.model.parameters())
    with torch.no_grad():
        p.add_(0.5)  # an in-place op: its version counter moves
    sampler(policy, prompts, 1, max_new_tokens=2)
    assert sampler.pushes == 2 and holds_the_model(sampler.engine, policy.model)
    p.data.add_(0.5)  # invisible to the version counter (as fused optimizer kernels are)
    sampler(policy, prompts, 1, max_new_tokens=2)
    assert sampler.pushes == 2 and not holds_the_model(sampler.engine, policy.model)
    sampler.weights_changed()
    sampler(policy, prompts, 1, max_new_tokens=2)
    assert sampler.pushes == 3 and holds_the_model(sampler.engine, policy.model)
    sampler(policy, prompts, 1, max_new_tokens=2, weights="previous")  # another kind: pushed again
    assert sampler.pushes == 4
    with pytest.raises(ValueError, match="weights must be one of"):
        sampler(policy, prompts, 1, weights="theta")


def test_samples_use_the_hf_layout_and_the_mixture_uses_the_hf_loop(load_policy, synthetic_task):
    policy = load_policy()
    sampler = fake_sampler(policy, synthetic_task)
    g = torch.Generator().manual_seed(0)
    s = sampler(policy, synthetic_task.prompts, 3, max_new_tokens=4, generator=g)
    assert s.prompt_index.tolist() == [i for i in range(3) for _ in range(3)]
    eos = policy.eos_token_ids[0]
    for ids, m, fin in zip(s.response_ids, s.response_mask, s.finished):
        n = int(m.sum())
        assert n >= 1 and bool(fin) == (int(ids[n - 1]) == eos) and (ids[n:] == policy.pad_token_id).all()
    pushes = sampler.pushes
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mixed = sampler(policy, synthetic_task.prompts, 2, max_new_tokens=4, mixture=0.5, generator=g1)
    hf = HFSampler()(policy, synthetic_task.prompts, 2, max_new_tokens=4, mixture=0.5, generator=g2)
    assert torch.equal(mixed.response_ids, hf.response_ids) and sampler.pushes == pushes


def test_sampler_and_generation_vllm_together_raise(load_policy, synthetic_task, tmp_path):
    cfg = TrainerConfig(**TINY, generation="vllm", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        NashTrainer(load_policy(), make_algorithm("nash_md"), synthetic_task.oracle(), synthetic_task.prompts,
                    cfg, sampler=HFSampler())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"generation": "sglang"}, "trainer.generation"), ({"vllm": {"mode": "remote"}}, "trainer.vllm.mode"),
     ({"vllm": {"mode": "server"}}, "server_url"), ({"vllm": {"gpu_mem": 0.5}}, "unknown trainer.vllm")],
)
def test_bad_generation_settings_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainerConfig(**overrides)
