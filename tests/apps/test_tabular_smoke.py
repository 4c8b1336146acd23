"""Run the tabular app by subprocess (as a user would) with tiny sweeps; check its files and numbers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nashalign
from nashalign.games import rock_paper_scissors

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tabular" / "run.py"


def run_app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(APP), *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_tiny_exact_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app(
        tmp_path,
        "-m",
        "algorithm=egpo,mwu",
        "game=rps",
        "run.steps=50",
        "run.record_every=5",
        f"hydra.sweep.dir={sweep}",
    )
    out = proc.stdout + proc.stderr
    assert "[1/2]" in out and "[2/2]" in out  # per-job progress
    assert "| rps | egpo |" in proc.stdout and str(sweep / "plot_rps.png") in proc.stdout
    for job in ("0", "1"):
        names = {p.name for p in (sweep / job).iterdir()}
        assert {"history.json", "history.csv", "result.json", "run.json"} <= names
    for name in ("summary.md", "summary.csv", "plot_rps.png"):
        assert (sweep / name).stat().st_size > 0
    assert not (tmp_path / "outputs").exists()  # everything went where hydra.*.dir said

    with open(sweep / "summary.csv") as f:
        rows = {r["algorithm"]: r for r in csv.DictReader(f)}
    game = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    target = nashalign.solve_regularized_nash(game, 0.1)
    egpo = nashalign.solve(game, "egpo", eta=0.1, tau=0.1, steps=50, record_every=5, target=target)
    mwu = nashalign.solve(game, "mwu", eta=0.1, tau=0.0, steps=50, record_every=5)
    np.testing.assert_allclose(float(rows["egpo"]["last"]), egpo.history.last("kl_target_last"), rtol=1e-9, atol=1e-16)
    np.testing.assert_allclose(float(rows["egpo"]["avg"]), egpo.history.last("kl_target_avg"), rtol=1e-9)
    np.testing.assert_allclose(float(rows["mwu"]["last"]), mwu.history.last("expl_last"), rtol=1e-12)
    np.testing.assert_allclose(float(rows["mwu"]["avg"]), mwu.history.last("expl_avg"), rtol=1e-12)
    assert rows["mwu"]["target"] == "Nash" and rows["egpo"]["target"] == "regularized Nash (tau=0.1)"

    hist = json.loads((sweep / "0" / "history.json").read_text())
    assert hist["step"] == list(range(0, 51, 5))
    res = nashalign.SolveResult.from_json(sweep / "0" / "result.json")
    np.testing.assert_allclose(res.last, egpo.last, atol=1e-12)


@pytest.mark.parametrize("mode", ["sampled"])
def test_tiny_sampled_run_reports_queries(tmp_path, mode):
    sweep = tmp_path / "sweep"
    run_app(
        tmp_path,
        "-m",
        f"run={mode}",
        "algorithm=egpo",
        "algorithm.eta=0.5",
        "game=rps",
        "run.steps=4",
        "run.record_every=2",
        "run.batch=8",
        "run.inner_steps=2",
        f"hydra.sweep.dir={sweep}",
    )
    with open(sweep / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["mode"] == "sampled" and int(row["queries"]) > 0
    assert (sweep / "plot_rps.png").exists()
