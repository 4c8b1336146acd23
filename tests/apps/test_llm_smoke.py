"""The llm app end to end, by subprocess (as a user runs it): train, resume, evaluate, a -m sweep with the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "model.warmup_steps=20",
    "trainer.iterations=2",
    "trainer.prompts_per_iteration=2",
    "trainer.max_new_tokens=4",
    "trainer.epochs=1",
    "trainer.eval_every=1",
    "trainer.progress=false",
]


def run(script: str, *overrides: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "llm" / script), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_resume_and_evaluate(tmp_path):
    out = tmp_path / "run"
    stdout = run("train.py", *FAST, f"hydra.run.dir={out}", "trainer.save_every=1")
    assert "exploitability     before" in stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and "kl_target" in rows[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["queries"] > 0
    assert (out / "final" / "config.json").exists()
    # a single run gets the shared report too (the run-end callback reads the run dir from the config)
    assert "| nash_md |" in (out / "summary.md").read_text() and (out / "summary.csv").exists()

    # continue the same run to 3 iterations from its newest checkpoint
    run("train.py", *FAST, f"hydra.run.dir={out}", "trainer.iterations=3", "trainer.resume=true")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]

    stdout = run(
        "evaluate.py",
        f"eval.checkpoint={out / 'final'}",
        "eval.samples_per_prompt=2",
        "eval.max_new_tokens=4",
        "model.warmup_steps=20",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    record = json.loads((tmp_path / "eval" / "win_rate.json").read_text())
    assert 0.0 <= record["win_rate/ci_low"] <= record["win_rate"] <= record["win_rate/ci_high"] <= 1.0
    assert "win rate of" in stdout


def test_multirun_sweep_writes_the_benchmark_summary(tmp_path):
    sweep = tmp_path / "sweep"
    run(
        "train.py",
        "+experiment=lm_benchmark",
        "algorithm=nash_md,egpo",  # the command line replaces the preset's sweep
        f"hydra.sweep.dir={sweep}",
        *FAST,
        "trainer.k=2",
        "trainer.opponent_samples=1",
    )
    table = (sweep / "summary.md").read_text()
    assert "| nash_md |" in table and "| egpo |" in table and "| omd |" not in table
    assert (sweep / "curves.png").exists()


def test_plain_multirun_writes_the_shared_report_with_swept_values_in_the_labels(tmp_path):
    """``llm/train.py -m`` without any preset: summary.md, summary.csv and curves.png through nashalign.reporting."""
    import csv

    from nashalign.reporting import history_curves, metric_name
    from nashalign.reporting.histories import DEFAULT_KEYS, collect_runs

    sweep = tmp_path / "sweep"
    stdout = run("train.py", "-m", "algorithm=egpo", "algorithm.eta=0.25,0.5", f"hydra.sweep.dir={sweep}", *FAST,
                 "trainer.k=2", "trainer.opponent_samples=1")  # fmt: skip
    labels = ["egpo (algorithm.eta=0.25)", "egpo (algorithm.eta=0.5)"]
    md = (sweep / "summary.md").read_text()
    assert all(f"| {label} |" in md for label in labels), md
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == labels and all(int(r["iterations"]) == 2 for r in rows)
    # each row's numbers are the job's own first and last logged values
    for row, job in zip(rows, sorted(p for p in sweep.iterdir() if p.is_dir())):
        logged = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert float(row["kl_target before"]) == logged[0]["kl_target"]
        assert float(row["kl_target after"]) == logged[-1]["kl_target"]
    # the exact target each run was measured against: pi*_tau of every prompt, rows summing to 1
    assert "## Exact targets (cvxpy)" in md
    assert md.count("| regularized Nash pi*_tau | 0.1 |") == 3  # both jobs' warmed-up LM: one target, 3 prompts
    target = json.loads(next(sweep.rglob("targets.json")).read_text())
    assert target["tau"] == 0.1
    for pi in target["target"]:
        assert abs(sum(pi) - 1.0) < 1e-6 and min(pi) >= 0.0
    # the plot exists and its curves carry the same labels (one per run and metric)
    assert (sweep / "curves.png").stat().st_size > 0 and "curves:" in stdout
    curves = history_curves(collect_runs(sweep), DEFAULT_KEYS)
    assert sorted(c.label for c in curves) == sorted(labels * 2)
    assert {c.panel for c in curves} == {metric_name(k) for k in DEFAULT_KEYS}
