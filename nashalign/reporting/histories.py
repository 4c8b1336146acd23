"""The LLM app's runs in the same report as the tabular sweeps: ``summary.md``, ``summary.csv`` and ``curves.png``.

An LLM run directory holds ``metrics.jsonl`` (one logged dict per iteration), and, written by ``llm/train.py``,
``.hydra/overrides.yaml`` (the job's command-line overrides) and ``targets.json`` (the exact targets of the
known-equilibrium benchmark: ``pi*_tau`` of each prompt's extended game and ``tau``).

* :func:`collect_runs` reads every run under a directory into ``{label: rows}``; the label is the algorithm
  followed by every swept value that differs between the runs (``egpo (algorithm.eta=0.5)``);
* :func:`summary_table` / :func:`summary_rows` give each run's first and last value of each metric;
* :func:`targets_table` lists the exact targets the runs were measured against;
* :func:`write_history_summary` writes all of it, with the table and plot code shared with the tabular app
  (:func:`~nashalign.reporting.markdown_table`, :func:`~nashalign.reporting.write_csv`,
  :func:`~nashalign.reporting.plot_metric_histories`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nashalign import reporting
from nashalign.reporting import format_number, markdown_table, write_csv

__all__ = [
    "DEFAULT_KEYS",
    "collect_runs",
    "plot_curves",
    "summary_rows",
    "summary_table",
    "targets_table",
    "write_history_summary",
]

#: The known-equilibrium benchmark's metrics: exploitability and ``KL(pi*_tau || pi)``.
DEFAULT_KEYS = ("exploitability", "kl_target")

#: Overrides that never distinguish runs (where outputs go, progress bars).
_IGNORED = re.compile(r"^(hydra\.|trainer\.(output_dir|progress|resume)$)")


def _natural(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _overrides(run_dir: Path) -> dict[str, str]:
    """The job's ``key=value`` command-line overrides (Hydra's ``.hydra/overrides.yaml``), ``{}`` if absent."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    import yaml

    out: dict[str, str] = {}
    for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        if not _IGNORED.match(key):
            out[key] = value
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _label_runs(found: list[tuple[Path, list[dict[str, Any]], dict[str, str]]]) -> dict[str, list[dict[str, Any]]]:
    """``{label: rows}``: algorithm name plus every override whose value differs between the runs."""
    keys = sorted({k for _, _, o in found for k in o})
    swept = [k for k in keys if len({o.get(k) for _, _, o in found}) > 1 and k != "algorithm"]
    runs: dict[str, list[dict[str, Any]]] = {}
    for run_dir, rows, over in found:
        label = str(rows[0].get("algorithm", run_dir.name))
        extra = ", ".join(f"{k}={over.get(k, '-')}" for k in swept)
        label = f"{label} ({extra})" if extra else label
        if label in runs:
            label = f"{label} [{run_dir.name}]"
        runs[label] = rows
    return runs


def collect_runs(root: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Read every ``metrics.jsonl`` under ``root`` (a run or a multirun directory): ``{label: rows}``.

    Runs are in job order.  The label is the algorithm name followed by every swept value (a command-line
    override of ``.hydra/overrides.yaml`` that differs between the runs), so two runs of one algorithm with
    different ``algorithm.eta`` read ``egpo (algorithm.eta=0.1)`` and ``egpo (algorithm.eta=0.5)``; runs that
    still coincide get their directory name appended.
    """
    found = []
    for path in sorted(Path(root).rglob("metrics.jsonl"), key=_natural):
        rows = _read_rows(path)
        if rows:
            found.append((path.parent, rows, _overrides(path.parent)))
    return _label_runs(found)


def plot_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    keys: Sequence[str] = DEFAULT_KEYS,
    *,
    x: str = "iteration",
    title: str | None = None,
) -> Path | None:
    """One log-scale panel per metric in ``keys``, one curve per run (labelled as in :func:`collect_runs`).

    Drawn by :func:`nashalign.reporting.plot_metric_histories`; ``title`` defaults to a description of the
    known-equilibrium benchmark.  Returns the path, or None when no run has any of ``keys``.
    """
    title = title or "Known-equilibrium LM benchmark: exact metrics of the LM's response distribution"
    return reporting.plot_metric_histories(runs, Path(path), keys, x=x, title=title)


def summary_rows(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str] = DEFAULT_KEYS
) -> list[dict[str, Any]]:
    """One row per run: ``run``, ``<key> before`` / ``<key> after`` (first and last logged value) and ``queries``."""
    out = []
    for label, rows in runs.items():
        row: dict[str, Any] = {"run": label}
        for k in keys:
            vals = [r[k] for r in rows if r.get(k) is not None]
            row[f"{k} before"] = vals[0] if vals else None
            row[f"{k} after"] = vals[-1] if vals else None
        row["iterations"] = max((int(r.get("iteration", 0)) for r in rows), default=0)
        row["queries"] = max((int(r.get("queries", 0)) for r in rows), default=0)
        out.append(row)
    return out


def summary_table(runs: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str] = DEFAULT_KEYS) -> str:
    """The markdown table of :func:`summary_rows` (4 significant digits)."""
    rows = summary_rows(runs, keys)
    cols = ["run"] + [f"{k} {w}" for k in keys for w in ("before", "after")] + ["queries"]
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for r in rows:
        cells = [str(r["run"])] + [
            "-" if r[c] is None else f"{r[c]:.4g}" for c in cols[1:-1]
        ] + [str(r["queries"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(root: str | os.PathLike[str]) -> str:
    """The distinct exact targets (``targets.json``) under ``root`` as a markdown table; ``""`` when none.

    One row per prompt of each distinct target: ``tau``, the prompt index and ``pi*_tau`` over the responses
    (the last entry is the mass on invalid responses of the extended game).
    """
    rows: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for path in sorted(Path(root).rglob("targets.json"), key=_natural):
        rec = json.loads(path.read_text(encoding="utf-8"))
        target = np.atleast_2d(np.asarray(rec["target"], dtype=np.float64))
        shown = ["[" + ", ".join(format_number(v, 3) for v in pi) + "]" for pi in target]
        key = (rec.get("kind"), repr(rec["tau"]), *shown)  # equal to the shown digits: one target (solver round-off)
        if key in seen:
            continue
        seen.add(key)
        for c, policy in enumerate(shown):
            rows.append({"target": rec.get("kind", "pi*_tau"), "tau": rec["tau"], "prompt": c, "policy": policy})
    return markdown_table(rows, ["target", "tau", "prompt", "policy"]) if rows else ""


def write_history_summary(
    root: str | os.PathLike[str],
    keys: Sequence[str] = DEFAULT_KEYS,
    *,
    filename: str = "curves.png",
    title: str | None = None,
) -> dict[str, Any] | None:
    """Write ``summary.md`` (exact targets, then the runs table), ``summary.csv`` and the curves plot under ``root``.

    Returns ``{"markdown", "targets", "rows", "summary_md", "summary_csv", "plot"}``, or None when ``root`` holds
    no ``metrics.jsonl``.
    """
    root = Path(root)
    runs = collect_runs(root)
    if not runs:
        return None
    table = summary_table(runs, keys)
    targets = targets_table(root)
    head = f"# {title}\n\n" if title else ""
    eq_part = "## Exact targets (cvxpy)\n\n" + targets + "\n\n## Runs\n\n" if targets else ""
    summary_md = root / "summary.md"
    summary_md.write_text(head + eq_part + table + "\n", encoding="utf-8")
    rows = summary_rows(runs, keys)
    summary_csv = write_csv(rows, root / "summary.csv")
    plot = plot_curves(runs, root / filename, keys, title=title)
    return {"markdown": table, "targets": targets, "rows": rows, "summary_md": summary_md,
            "summary_csv": summary_csv, "plot": plot}  # fmt: skip
