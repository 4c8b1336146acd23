"""The prepared GPU run, ``benchmarks/gpu_check.sh``, runs its CPU-size steps here (``--dry-run``): every step ok,
nothing written into benchmarks/results/.  On the GPU machine the same script runs the gpu-marked tests and the
CUDA benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _results() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in (ROOT / "benchmarks" / "results").iterdir()}


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_step_and_writes_nothing():
    before = _results()
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    summary = done.stdout[done.stdout.index("=== summary") :].splitlines()[1:]  # the step lines end stdout
    steps = [line for line in summary if line.strip()]
    assert len(steps) >= 3, out[-3000:]  # pytest -m gpu, the tabular step, the LLM step
    assert all(" ok " in line for line in steps), "\n".join(steps)
    assert _results() == before
