"""Benchmark curves of LLM runs: read every ``metrics.jsonl`` under a directory, plot and tabulate them.

Used by the llm app's :class:`~nashalign.llm.app.BenchmarkSummary` Hydra callback after a sweep.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["collect_runs", "plot_curves", "summary_table"]



def collect_runs(root: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Read every ``metrics.jsonl`` under ``root`` (a run or a multirun directory): ``{label: rows}``.

    The label is the algorithm name (suffixed with the job directory when an algorithm appears twice).
    """
    runs: dict[str, list[dict[str, Any]]] = {}

    def natural(path: Path) -> list[Any]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]

    for path in sorted(Path(root).rglob("metrics.jsonl"), key=natural):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            continue
        label = str(rows[0].get("algorithm", path.parent.name))
        if label in runs:
            label = f"{label} ({path.parent.name})"
        runs[label] = rows
    return runs


def plot_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    keys: Sequence[str] = ("exploitability", "kl_target"),
    *,
    x: str = "iteration",
    title: str | None = None,
) -> Path | None:
    """One log-scale panel per metric in ``keys``, one curve per run; saved to ``path`` (PNG/PDF by suffix).

    Drawn by :func:`nashalign.reporting.plot_metric_histories` (readable metric names, strong colours, offset
    markers; runs with identical curves share one line).  ``title`` defaults to a description of the
    known-equilibrium benchmark.  Returns the path, or None when no run has any of ``keys``.
    """
    from nashalign import reporting

    title = title or "Known-equilibrium LM benchmark: exact metrics of the LM's response distribution"
    return reporting.plot_metric_histories(runs, Path(path), keys, x=x, title=title)


def summary_table(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str] = ("exploitability", "kl_target"),
) -> str:
    """A markdown table: for each run, each key's first and last recorded value."""
    head = "| run | " + " | ".join(f"{k} before | {k} after" for k in keys) + " | queries |"
    sep = "|---" * (1 + 2 * len(keys) + 1) + "|"
    lines = [head, sep]
    for label, rows in runs.items():
        cells = []
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            cells += [f"{vals[0]:.4g}" if vals else "-", f"{vals[-1]:.4g}" if vals else "-"]
        q = max((int(r.get("queries", 0)) for r in rows), default=0)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {q} |")
    return "\n".join(lines)
