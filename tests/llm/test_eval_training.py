"""Evaluation during training (held-out prompts, own oracle) and the missing-EOS penalty, through NashTrainer."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_settings import TINY as _BASE  # noqa: E402

from nashalign.algorithms import get_algorithm
from nashalign.llm.evaluate import FinishedText, apply_missing_eos_penalty, compare, heldout_metrics
from nashalign.llm.trainer import NashTrainer, TrainerConfig

TINY = {**_BASE, "track_win_rate": False}


def _length_oracle(prompts, first, second):
    """Prefers the longer response (a length-biased judge), 1/2 on ties."""
    return torch.tensor([0.5 + 0.1 * max(-4, min(4, len(a) - len(b))) / 4 for a, b in zip(first, second)])


def _trainer(policy, task, tmp_path, **overrides):
    cfg = TrainerConfig(**{**TINY, "output_dir": str(tmp_path), **overrides})
    return NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), task.oracle(), task.prompts[:2], cfg)


def test_heldout_evaluation_is_logged_on_schedule_and_leaves_training_unchanged(load_policy, synthetic_task, tmp_path):
    task = synthetic_task
    held = task.prompts[2:]
    trainer = _trainer(load_policy(), task, tmp_path / "eval", eval_prompts=held, eval_oracle=_length_oracle,
                       eval_every=1, eval_samples=3)  # fmt: skip
    history = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert 0.0 <= r["eval/win_rate"] <= 1.0 and 0.0 <= r["eval/lc_win_rate"] <= 1.0
        assert r["eval/win_rate/ci_low"] <= r["eval/win_rate"] <= r["eval/win_rate/ci_high"]
    assert trainer.eval_queries == 3 * len(held) * 3  # 3 evaluations of k=3 samples per held-out prompt
    # the value logged before training is heldout_metrics on the untrained policy with the same seed
    fresh = heldout_metrics(load_policy(), held, _length_oracle, k=3, max_new_tokens=4, seed=0)
    assert history[0]["eval/win_rate"] == pytest.approx(fresh["eval/win_rate"], abs=1e-12)
    assert history[0]["eval/lc_win_rate"] == pytest.approx(fresh["eval/lc_win_rate"], abs=1e-12)
    # evaluation draws from its own generator: training without it ends at the same parameters
    plain = _trainer(load_policy(), task, tmp_path / "plain", eval_every=1)
    plain.train()
    for (n1, p1), (n2, p2) in zip(trainer.policy.model.named_parameters(), plain.policy.model.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert TrainerConfig(eval_oracle=_length_oracle).to_dict()["eval_oracle"] == "_length_oracle"


def test_eval_config_errors():
    with pytest.raises(ValueError, match="eval_prompts"):
        TrainerConfig(eval_prompts="one prompt")
    with pytest.raises(ValueError, match="eval_samples"):
        TrainerConfig(eval_samples=0)
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        TrainerConfig(missing_eos_penalty=1.5)


class _Recorder:
    """Wraps the trainer's oracle: keeps (first, second, answer) of every call."""

    is_nashalign_oracle = True

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, prompts, first, second):
        out = self.inner(prompts, first, second)
        self.calls.append((list(first), list(second), torch.as_tensor(out).clone()))
        return out


def test_missing_eos_penalty_is_applied_to_training_feedback(load_policy, synthetic_task, tmp_path):
    task = synthetic_task
    half = lambda x, a, b: torch.full((len(a),), 0.5, dtype=torch.float64)  # noqa: E731
    cfg = TrainerConfig(**{**TINY, "output_dir": str(tmp_path), "missing_eos_penalty": 1.0, "max_new_tokens": 2, "temperature": 2.0,
                           "iterations": 3, "prompts_per_iteration": 3})  # fmt: skip
    trainer = NashTrainer(load_policy(), get_algorithm("nash_md", eta=0.5, tau=0.1), half, task.prompts, cfg)
    rec = _Recorder(trainer.oracle)
    trainer.oracle = rec
    trainer.train()
    mixed = 0
    for first, second, out in rec.calls:
        assert all(isinstance(t, FinishedText) for t in first + second)  # every response carries its flag
        fa = torch.tensor([t.finished for t in first])
        fb = torch.tensor([t.finished for t in second])
        expected = apply_missing_eos_penalty(torch.full((len(first),), 0.5, dtype=torch.float64), fa, fb, 1.0)
        assert torch.equal(out.double(), expected)
        mixed += int((fa != fb).sum())
    assert mixed > 0  # the penalty really changed answers (0 or 1 instead of 1/2)


def test_truncation_ignores_eos_tokens_in_the_prompt(random_lm_dir, load_policy):
    """trl#6802: an EOS inside the (chat-formatted) prompt must not count as the response's EOS."""
    pol = load_policy(random_lm_dir)
    eos = pol.tokenizer.eos_token
    prompts = [f"one {eos} two {eos}", "three"]
    res = compare(pol, "reference", prompts, lambda x, a, b: torch.full((len(a),), 0.5), k=2, max_new_tokens=1,
                  seed=0, missing_eos_penalty=1.0)  # fmt: skip
    assert res.finished_a.tolist() == [False] * 4 and res.finished_b.tolist() == [False] * 4
    assert res.win_rate.mean == 0.5  # both truncated: the oracle's answer stands


def _app(script, *overrides, path=""):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=f"{root}:{path}"
    )
    proc = subprocess.run([sys.executable, str(root / "llm" / script), *overrides], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_llm_apps_log_heldout_and_length_controlled_win_rates(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "tmpjudges.py").write_text(
        "import torch\n"
        "def longer(prompts, first, second):\n"
        "    return torch.tensor([float(len(a) > len(b)) for a, b in zip(first, second)])\n"
    )
    fast = ["model.warmup_steps=20", "trainer.iterations=2", "trainer.prompts_per_iteration=2",
            "trainer.max_new_tokens=4", "trainer.epochs=1", "trainer.progress=false", "trainer.eval_every=1"]  # fmt: skip
    _app("train.py", *fast, f"hydra.run.dir={out}", "trainer.eval_prompts=[pick one, choose]", "trainer.eval_samples=2",
         "trainer.missing_eos_penalty=1.0",
         "trainer.eval_oracle={_target_: nashalign.oracles.from_callable, fn: tmpjudges.longer}", path=str(tmp_path))  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(0 <= r["eval/win_rate"] <= 1 and "eval/lc_win_rate" in r for r in rows)  # LC: NaN on 4 pairs
    assert all(r["eval/queries"] == 4 for r in rows)
    assert (out / "eval_curves.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/win_rate"] == rows[-1]["eval/win_rate"]
    stdout = _app("evaluate.py", f"eval.checkpoint={out / 'final'}", "eval.samples_per_prompt=2", "eval.max_new_tokens=4",
                  "model.warmup_steps=20", f"hydra.run.dir={tmp_path / 'eval'}", "trainer.missing_eos_penalty=1.0")  # fmt: skip
    record = json.loads((tmp_path / "eval" / "win_rate.json").read_text())
    assert {"lc_win_rate", "lc_win_rate/ci_low", "lc_win_rate/ci_high", "truncated_a"} <= set(record)
    assert "length-controlled: LC" in stdout
