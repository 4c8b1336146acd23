"""Resume after a real ``kill -9`` is bit-identical: mid-run (the llm app, default tiny model) and during a
checkpoint write (the write is atomic: the last complete checkpoint survives and the run resumes from it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nashalign.llm.config import TIMING_KEYS

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "model.warmup_steps=20",
    "trainer.iterations=6",
    "trainer.prompts_per_iteration=2",
    "trainer.max_new_tokens=4",
    "trainer.epochs=2",
    "trainer.eval_every=1",
    "trainer.progress=false",
    "trainer.save_every=1",
    "trainer.save_total_limit=null",
    "algorithm=egpo",  # two phases, optimizer restore: the most state to get right
]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    return env


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "llm" / "train.py"), *FAST, f"hydra.run.dir={out}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _weights(final: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(final / "model.safetensors"))


def _stable_metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a / "final"), _weights(b / "final")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"parameter {name} differs after kill -9 and resume"
    assert _stable_metrics(a / "metrics.jsonl") == _stable_metrics(b / "metrics.jsonl")


@pytest.mark.slow
def test_app_kill_9_mid_run_then_resume_is_bit_identical(tmp_path):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    _train(straight)
    cmd = [sys.executable, str(ROOT / "llm" / "train.py"), *FAST, f"hydra.run.dir={cut}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (cut / "checkpoints" / "iter-000002" / "trainer_state.json").exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "final").exists()  # really interrupted
    _train(cut, "trainer.resume=true")
    _assert_same_run(straight, cut)


DRIVER = r'''
import os, signal, sys
from accelerate import Accelerator
from nashalign.algorithms import get_algorithm
from nashalign.llm.synthetic import build_task, build_tiny_policy
from nashalign.llm.trainer import NashTrainer, TrainerConfig

out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
real_save = Accelerator.save_state

def save_then_die(self, output_dir=None, **kw):
    result = real_save(self, output_dir, **kw)
    if output_dir.endswith(f"iter-{kill_at:06d}.tmp"):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the checkpoint write
    return result

Accelerator.save_state = save_then_die
task = build_task()
policy = build_tiny_policy(task, seed=0, warmup_steps=20)  # the app's default source: built in-process
cfg = TrainerConfig(iterations=4, prompts_per_iteration=2, max_new_tokens=4, epochs=2, minibatch_size=4,
                    learning_rate=1e-2, cpu=True, num_threads=1, progress=False, save_every=1,
                    output_dir=out, resume=resume)
NashTrainer(policy, get_algorithm("omwu", eta=0.5), task.oracle(), task.prompts, cfg).train()
'''


def test_kill_9_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    def run(out: Path, kill_at: int, resume: bool) -> int:
        cmd = [sys.executable, str(driver), str(out), str(kill_at), "1" if resume else "0"]
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
        return proc.returncode

    assert run(tmp_path / "straight", 0, False) == 0
    cut = tmp_path / "cut"
    assert run(cut, 3, False) == -signal.SIGKILL
    names = sorted(p.name for p in (cut / "checkpoints").iterdir())
    assert "iter-000003.tmp" in names and "iter-000003" not in names  # the torn write never became a checkpoint
    from nashalign.llm.checkpoint import latest_checkpoint

    assert latest_checkpoint(cut).name == "iter-000002"
    assert run(cut, 0, True) == 0
    assert not any(p.name.endswith(".tmp") for p in (cut / "checkpoints").iterdir())  # cleaned by the next save
    _assert_same_run(tmp_path / "straight", cut)
