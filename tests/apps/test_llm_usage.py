"""The llm app with a user's algorithm class on top of a shipped option (issue 12): its own name, no null keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HALF_MIX = '''
from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current


@dataclass(frozen=True)
class HalfMix(MirrorAlgorithm):
    name = "half_mix"
    tau_rule = "positive"
    forms = ("regression",)
    estimator = "pair"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
'''


def test_custom_target_on_nash_md_trains_under_its_own_name(tmp_path):
    (tmp_path / "my_algs.py").write_text(HALF_MIX)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "llm" / "train.py"), "algorithm=nash_md", "algorithm._target_=my_algs.HalfMix",
           "model.warmup_steps=20", "trainer.iterations=1", "trainer.prompts_per_iteration=2",
           "trainer.max_new_tokens=4", "trainer.epochs=1", "trainer.progress=false", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # nash_md's mixture/form nulls not passed
    assert json.loads((out / "summary.json").read_text())["algorithm"] == "half_mix"
    assert "half_mix on the known-equilibrium benchmark" in proc.stdout
