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

__all__ = ["collect_runs", "plot_curves", "summary_table", "LABELS"]

#: Readable names of the benchmark's metrics (panel titles).
LABELS = {
    "exploitability": "exploitability  max_y P(y > pi) - 1/2",
    "kl_target": "KL(pi*_tau || pi) to the regularised equilibrium",
    "reg_exploitability": "regularised exploitability",
    "invalid_mass": "mass on invalid responses",
}


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

    Panels are titled with readable metric names (:data:`LABELS`); ten strong colours, then the same colours
    dashed, with markers offset between curves so that coinciding curves stay visible.  ``title`` defaults to
    a description of the known-equilibrium benchmark.  Returns the path, or None when no run has any of ``keys``.
    """
    keys = [k for k in keys if any(k in r for rows in runs.values() for r in rows)]
    if not keys:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys) + 1.5, 4.2), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    styles = ("-", "--", ":", "-.")
    for ax, key in zip(axes[0], keys):
        for i, (label, rows) in enumerate(runs.items()):
            pts = [(r[x], r[key]) for r in rows if key in r and r[key] is not None and r[key] > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3.5, markevery=(i % 3, 3), lw=1.6, label=label,
                        color=colors[i % 10], ls=styles[(i // 10) % 4])
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_title(LABELS.get(key, key), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(title or "Known-equilibrium LM benchmark: exact metrics of the LM's response distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
