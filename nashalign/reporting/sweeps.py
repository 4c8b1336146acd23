"""A directory of tabular runs as one report (:mod:`nashalign.reporting`): ``summary.md``, ``summary.csv``, plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nashalign.reporting.plots import Curve, _colors, plot_curves
from nashalign.reporting.records import _auto_metric, _metric_label
from nashalign.reporting.tables import METRICS, PLOT_FLOOR, TINY, format_number, markdown_table, read_json, write_csv

__all__ = ["load_runs", "summary_rows", "equilibria_rows", "equilibria_table", "write_summary", "plot_results"]


def load_runs(root: str | Path, *, since: float | None = None, recursive: bool = True) -> list[dict[str, Any]]:
    """Every ``run.json`` under ``root``, each with its ``history`` and ``dir`` attached.

    Ordered by Hydra's job number when present, else by path.

    Args:
        root: a sweep or run directory.
        since: skip ``run.json`` files last written before this time (``time.time()``): stale runs of an
            earlier sweep or run into the same directory are not summarized with the current ones.
        recursive: any depth (a sweep); False reads ``root/run.json`` only (a single run).
    """
    root = Path(root)
    runs = []
    paths = sorted(root.rglob("run.json")) if recursive else [p for p in (root / "run.json",) if p.exists()]
    for p in paths:
        if since is not None and p.stat().st_mtime < since:
            continue
        rec = read_json(p)
        hist_path = p.parent / "history.json"
        rec["history"] = read_json(hist_path) if hist_path.exists() else {}
        rec["dir"] = str(p.parent)
        runs.append(rec)
    runs.sort(key=lambda r: (r.get("job") if isinstance(r.get("job"), int) else 1 << 30, r["dir"]))
    return runs


#: Settings that may distinguish two runs with the same label inside one plot/table group.
_VARYING_KEYS = ("eta", "tau", "mixture", "beta", "form", "mode", "steps", "seed")


def _value_of(run: Mapping[str, Any], key: str) -> Any:
    if key in run and key not in ("hyperparameters",):
        return run[key]
    return run.get("hyperparameters", {}).get(key)


def _labels(runs: Sequence[Mapping[str, Any]], group_by: Sequence[str]) -> list[str]:
    """Row labels, made unique within a group by the settings that differ (``egpo (eta=0.5)``)."""
    labels = [str(r["label"]) for r in runs]
    buckets: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        buckets.setdefault((_group_key(r, group_by), labels[i]), []).append(i)
    for idx in buckets.values():
        if len(idx) < 2:
            continue
        keys = [k for k in _VARYING_KEYS if k not in group_by and len({repr(_value_of(runs[i], k)) for i in idx}) > 1]
        for i in idx:
            extra = ", ".join(f"{k}={format_number(_value_of(runs[i], k))}" for k in keys)
            labels[i] = f"{labels[i]} ({extra})" if extra else f"{labels[i]} #{i}"
    return labels


def _group_key(run: Mapping[str, Any], group_by: Sequence[str]) -> tuple:
    return tuple(_value_of(run, k) for k in group_by)


def _group_name(key: tuple, group_by: Sequence[str]) -> str:
    parts = []
    for k, v in zip(group_by, key):
        parts.append(str(v) if k == "game" else f"{k}{format_number(v)}")
    return "_".join(parts).replace("/", "-").replace(" ", "")


def summary_rows(
    runs: Sequence[Mapping[str, Any]], metric: str = "auto", group_by: Sequence[str] = ("game",)
) -> list[dict[str, Any]]:
    """One table row per run: settings, the target, the metric for the last and average iterates.

    Columns: ``game, algorithm, eta, tau, mode, steps, target, metric, last, avg, ctx_median, ctx_max,
    expl_last, queries, status, time_s``.  ``last``/``avg`` are the metric's final values (mean over
    contexts, as in the history); ``ctx_median``/``ctx_max`` are the median and max over contexts of
    the last iterate's metric (``C`` contexts = ``C`` independent games).
    """
    labels = _labels(runs, group_by)
    rows = []
    for run, label in zip(runs, labels):
        m = _auto_metric(run, metric)
        col_last, col_avg, scale, _ = METRICS[m]
        fin = run.get("final", {})
        per_ctx = run.get("contexts", {}).get(col_last)
        ctx = scale * np.asarray(per_ctx, dtype=float) if per_ctx else None
        tau = float(run.get("tau") or 0.0)
        rows.append(
            {
                "game": run.get("game"),
                "algorithm": label,
                "eta": run.get("eta"),
                "tau": tau,
                "mode": run.get("mode"),
                "steps": run.get("steps"),
                "target": run.get("target") or ("Nash" if tau == 0 else f"regularized Nash (tau={tau:g})"),
                "metric": _metric_label(m, run),
                "last": scale * float(fin.get(col_last, math.nan)),
                "avg": scale * float(fin.get(col_avg, math.nan)),
                "ctx_median": float(np.median(ctx)) if ctx is not None else math.nan,
                "ctx_max": float(np.max(ctx)) if ctx is not None else math.nan,
                "num_contexts": run.get("num_contexts"),
                "expl_last": float(fin.get("expl_last", math.nan)),
                "queries": int(fin.get("queries", 0) or 0),
                "status": run.get("status"),
                "time_s": float(fin.get("time", math.nan)),
                "dir": run.get("dir"),
            }
        )
    return rows


def _table_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    cols = [
        ("game", "game"),
        ("algorithm", "algorithm"),
        ("eta", "eta"),
        ("tau", "tau"),
        ("target", "measured against"),
        ("metric", "metric"),
        ("last", "last iterate"),
        ("avg", "average iterate"),
    ]
    if any((r.get("num_contexts") or 1) > 1 for r in rows):
        cols += [("ctx_median", "last: median over contexts"), ("ctx_max", "last: max over contexts")]
    cols.append(("steps", "steps"))
    if any(r.get("mode") == "sampled" for r in rows):
        cols += [("mode", "mode"), ("queries", "queries")]
    cols += [("status", "status"), ("time_s", "time [s]")]
    return cols


def equilibria_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct ``(game, equilibrium)`` among ``runs``: the exact target each run was measured against.

    Columns: ``game``, ``equilibrium`` (``Nash`` or ``regularized Nash (tau=...)``), ``contexts``,
    ``responses``, ``policy`` (context 0's probabilities, rounded, when ``n <= 8``; otherwise its support size
    and largest mass), ``support`` (mean support size over contexts), ``exploitability`` (max over contexts:
    ``max_y P(y > pi*) - 1/2`` for Nash, the regularised exploitability ``tau KL(pi* || BR_tau(pi*))`` for
    ``pi*_tau``; both are 0 at the exact equilibrium).
    """
    out: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        eq = r.get("equilibrium")
        if not eq:
            continue
        key = (r.get("game"), eq.get("kind"))
        if key in out:
            continue
        n = r.get("num_responses")
        pol = eq.get("policy")
        sup = eq.get("support") or []
        if pol is not None and n is not None and n <= 8:
            shown = "[" + ", ".join(f"{p:.3f}" for p in pol[0]) + "]"
        elif pol is not None:
            shown = f"{sup[0]} of {n} responses, max {max(pol[0]):.3f}"
        else:
            shown = "(not stored: large game)"
        out[key] = {
            "game": key[0],
            "equilibrium": key[1],
            "contexts": r.get("num_contexts"),
            "responses": n,
            "policy": shown,
            "support": float(np.mean(sup)) if sup else None,
            "exploitability": max(eq.get("exploitability") or [float("nan")]),
        }
    return list(out.values())


def equilibria_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """:func:`equilibria_rows` as a markdown table ("" when no run had an exact target)."""
    rows = equilibria_rows(runs)
    if not rows:
        return ""
    cols = ["game", "equilibrium", "contexts", "responses", ("policy", "policy (context 0)"), "support",
            ("exploitability", "exploitability (max over contexts)")]  # fmt: skip
    return markdown_table(rows, cols, digits=3)


def write_summary(
    root: str | Path,
    runs: Sequence[Mapping[str, Any]] | None = None,
    *,
    metric: str = "auto",
    x_axis: str = "auto",
    group_by: Sequence[str] = ("game",),
    plots: bool = True,
    title: str | None = None,
) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.csv`` and ``plot_<group>.png`` for the runs under ``root``.

    Args:
        root: the sweep (or run) directory; outputs go here.
        runs: the records (default: :func:`load_runs` of ``root``).
        metric: ``"auto"`` or a key of :data:`METRICS` (see the module docstring).
        x_axis: ``"step"`` (iterations), ``"queries"`` (preference-oracle queries) or ``"auto"``
            (queries when every run of a plot is sampled, else iterations).
        group_by: one plot per distinct value of these run keys (``("game",)``, ``("game", "tau")``).
        plots: write the PNGs.
        title: a heading for ``summary.md``.

    Returns:
        ``{"markdown": str, "rows": list, "equilibria": str, "summary_md": Path, "summary_csv": Path,
        "plots": [Path, ...]}`` (``equilibria`` is :func:`equilibria_table`: the exact targets).
    """
    if x_axis not in ("auto", "step", "queries"):
        raise ValueError(f"x_axis must be 'auto', 'step' or 'queries', got {x_axis!r}.")
    root = Path(root)
    runs = load_runs(root) if runs is None else list(runs)
    group_by = tuple(group_by)
    first: dict[tuple, int] = {}
    for i, r in enumerate(runs):  # groups in order of first appearance (the sweep's order), runs in job order
        first.setdefault(_group_key(r, group_by), i)
    runs = sorted(runs, key=lambda r: first[_group_key(r, group_by)])
    rows = summary_rows(runs, metric=metric, group_by=group_by)
    md = markdown_table(rows, _table_columns(rows), tiny=TINY)
    head = f"# {title}\n\n" if title else ""
    note = (
        "\n\n`last`/`average` are the final values of `metric` (mean over contexts). Rows with tau = 0 are "
        "measured against the Nash equilibrium by exploitability; rows with tau > 0 against the regularized "
        "equilibrium pi*_tau (exact, from cvxpy) by KL(pi*_tau || pi) unless another metric was asked for.\n"
    )
    eq_md = equilibria_table(runs)
    eq_part = (
        "## Exact equilibria (cvxpy)\n\n" + eq_md + "\n\n## Runs\n\n" if eq_md else ""
    )
    summary_md = root / "summary.md"
    summary_md.write_text(head + eq_part + md + note)
    summary_csv = write_csv(rows, root / "summary.csv")
    pngs: list[Path] = []
    if plots and runs:
        labels = [r["algorithm"] for r in rows]
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(runs):
            groups.setdefault(_group_key(r, group_by), []).append(i)
        for key, idx in groups.items():
            pngs.append(
                _plot_group(root, key, group_by, [runs[i] for i in idx], [labels[i] for i in idx], metric, x_axis)
            )
    return {"markdown": md, "rows": rows, "equilibria": eq_md, "summary_md": summary_md, "summary_csv": summary_csv, "plots": pngs}


def _group_curves(
    runs: Sequence[Mapping[str, Any]], labels: Sequence[str], metric: str, x_axis: str
) -> tuple[list[Curve], str, str]:
    """The curves of one plot (last iterate solid, average dashed), its x label and y label.

    Runs whose curves coincide (e.g. mwu = sppo = spo = dno, omd = inpo on exact dynamics) share one line and
    one legend entry ``mwu = sppo``; curves that merely come close keep their own line, marker and offset.
    With ``metric="auto"`` and runs measured in different metrics (exploitability for tau = 0, KL to
    ``pi*_tau`` for tau > 0), each metric gets its own panel: different quantities never share an axis.
    """
    xcol = x_axis
    if x_axis == "auto":
        xcol = "queries" if runs and all(r.get("mode") == "sampled" for r in runs) else "step"
    entries: list[dict[str, Any]] = []
    for run, label in zip(runs, labels):
        m = _auto_metric(run, metric)
        col_last, col_avg, scale, _ = METRICS[m]
        h = run.get("history", {})
        x = np.asarray(h.get(xcol, []), dtype=float)
        ys = [scale * np.asarray(h.get(c, [math.nan] * len(x)), dtype=float) for c in (col_last, col_avg)]
        panel = _metric_label(m, run) if metric == "auto" else METRICS[metric][3]
        for e in entries:
            if e["panel"] == panel and _same_curves(e["x"], e["ys"], x, ys):
                e["labels"].append(label)
                break
        else:
            entries.append({"x": x, "ys": ys, "labels": [label], "panel": panel})
    panels = list(dict.fromkeys(e["panel"] for e in entries))
    curves = []
    for e, color in zip(entries, _colors(len(entries))):
        panel = _PANEL_NAMES.get(e["panel"], e["panel"]) if len(panels) > 1 else None
        for y, ls, legend in ((e["ys"][0], "-", True), (e["ys"][1], "--", False)):
            if np.isfinite(y).any():
                curves.append(Curve(" = ".join(e["labels"]), e["x"], y, ls, color, legend, 1.8, panel))
    ylabel = METRICS[metric][3] if metric != "auto" else _PANEL_NAMES.get(panels[0], panels[0]) if panels else ""
    xlabel = "preference-oracle queries" if xcol == "queries" else "iterations"
    return curves, xlabel, ylabel


#: y-axis names of the metric labels :func:`_metric_label` gives.
_PANEL_NAMES = {
    "expl": "exploitability (vs Nash, tau = 0 runs)",
    "reg. expl": "regularized exploitability",
    "DG_tau": "DG_tau (regularized duality gap)",
    "KL to pi*_tau": "KL(pi*_tau || pi) (tau > 0 runs)",
    "KL to pi*": "KL(pi* || pi)",
}


def _plot_group(
    root: Path,
    key: tuple,
    group_by: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    metric: str,
    x_axis: str,
) -> Path:
    curves, xlabel, ylabel = _group_curves(runs, labels, metric, x_axis)
    name = _group_name(key, group_by)
    title = ", ".join(f"{k} = {format_number(v)}" if k != "game" else f"game: {v}" for k, v in zip(group_by, key))
    return plot_curves(
        curves,
        root / f"plot_{name}.png",
        xlabel=xlabel,
        ylabel=ylabel,
        logy=True,
        title=title + "  (solid: last iterate, dashed: average)",
        styles={"-": "last iterate", "--": "average iterate"},
    )


def plot_results(
    results: Mapping[str, Any] | Sequence[Any],
    path: str | Path,
    *,
    metric: str = "auto",
    x_axis: str = "auto",
    title: str | None = None,
) -> Path:
    """Plot :class:`~nashalign.result.SolveResult` histories the way the tabular app plots a sweep.

    The same curves as ``plot_<game>.png`` of ``tabular/run.py`` (this is the function behind it): last
    iterate solid, average dashed, log scale, coinciding runs merged into one legend entry, every curve
    with its own marker and offset, and one panel per metric when runs are measured differently.

    Args:
        results: ``{label: SolveResult}``, or a sequence of results (labelled by their algorithm's name).
        path: output PNG.
        metric: ``"auto"`` (KL to the target when the history has it and ``tau > 0``, the regularised
            exploitability for ``tau > 0`` without a target, exploitability for ``tau = 0``) or a key of
            :data:`METRICS`.
        x_axis: ``"step"``, ``"queries"`` or ``"auto"`` (queries when every result is sampled).
        title: plot title.

    Example:
        >>> import nashalign as na
        >>> from nashalign import games, reporting
        >>> g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
        >>> star = na.solve_regularized_nash(g, 0.1)
        >>> res = {a: na.solve(g, a, eta=0.5, tau=0.1, steps=200, target=star) for a in ("egpo", "omd")}
        >>> reporting.plot_results(res, "rps.png")  # doctest: +SKIP
    """
    if metric != "auto" and metric not in METRICS:
        raise ValueError(f"metric must be 'auto' or one of {sorted(METRICS)}, got {metric!r}.")
    if x_axis not in ("auto", "step", "queries"):
        raise ValueError(f"x_axis must be 'auto', 'step' or 'queries', got {x_axis!r}.")
    items = list(results.items()) if isinstance(results, Mapping) else [(None, r) for r in results]
    if not items:
        raise ValueError("plot_results: results is empty; pass {label: SolveResult} or a list of results.")
    runs, labels = [], []
    for label, res in items:
        if not hasattr(res, "history") or not hasattr(res, "settings"):
            raise TypeError(f"plot_results: expected SolveResult values, got {type(res).__name__}.")
        hist = res.history.as_dict()
        tau = float((res.settings.get("hyperparameters", {}) or {}).get("tau", 0.0) or 0.0)
        runs.append({"tau": tau, "mode": res.settings.get("mode"), "history": hist,
                     "target": "exact" if "kl_target_last" in hist else None})  # fmt: skip
        name = str(label) if label is not None else str(res.settings.get("algorithm", "run"))
        labels.append(name if name not in labels else f"{name} #{len(labels)}")
    curves, xlabel, ylabel = _group_curves(runs, labels, metric, x_axis)
    return plot_curves(curves, path, xlabel=xlabel, ylabel=ylabel, logy=True,
                       title=(title + "  " if title else "") + "(solid: last iterate, dashed: average)",
                       styles={"-": "last iterate", "--": "average iterate"})  # fmt: skip


def _same_curves(x1: np.ndarray, ys1: Sequence[np.ndarray], x2: np.ndarray, ys2: Sequence[np.ndarray]) -> bool:
    if x1.shape != x2.shape or not np.array_equal(x1, x2):
        return False
    floor = PLOT_FLOOR
    return all(
        a.shape == b.shape
        and np.allclose(np.maximum(a, floor), np.maximum(b, floor), rtol=1e-9, atol=0, equal_nan=True)
        for a, b in zip(ys1, ys2)
    )
