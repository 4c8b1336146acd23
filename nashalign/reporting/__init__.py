"""Outputs of runs and sweeps: JSON/CSV writers, markdown tables and log-scale convergence plots.

Two layers, both usable without Hydra (the LLM app reuses the first for its curves):

* generic writers: :func:`write_json`, :func:`read_json`, :func:`write_csv`, :func:`markdown_table`,
  :func:`format_number`, :class:`Curve` and :func:`plot_curves` (matplotlib, imported lazily, drawn on an
  Agg canvas without touching pyplot's global state);
* the tabular run/sweep record: :func:`run_record` + :func:`write_run` write one solve's
  ``history.json``, ``history.csv``, ``result.json`` and ``run.json``; :func:`load_runs` +
  :func:`write_summary` turn a directory of runs (any launcher) into ``summary.md``, ``summary.csv`` and
  one ``plot_<group>.png`` per game (or per game and ``tau``).

Which number measures a run (``metric``):

* ``"expl"``: exploitability ``max_y P(y > pi) - 1/2`` (distance to the Nash equilibrium, ``tau = 0``);
* ``"reg_expl"``: regularised exploitability ``DG_tau(pi)/2 = tau KL(pi || BR_tau(pi))``;
* ``"dg"``: the regularised duality gap ``DG_tau = 2 reg_expl`` (EGPO's metric);
* ``"kl_target"``: ``KL(pi* || pi)`` to the exact equilibrium from cvxpy (``pi*_tau`` when ``tau > 0``);
* ``"auto"``: ``kl_target`` for ``tau > 0`` runs with a known target (``reg_expl`` without one),
  ``expl`` for ``tau = 0`` runs.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "Curve",
    "format_number",
    "history_curves",
    "load_runs",
    "markdown_table",
    "equilibria_rows",
    "equilibria_table",
    "one_line",
    "curves_figure",
    "metric_name",
    "plot_curves",
    "plot_metric_histories",
    "plot_results",
    "read_json",
    "run_record",
    "summary_rows",
    "write_csv",
    "write_json",
    "write_run",
    "write_summary",
]

#: Values below this are drawn at this height on log-scale plots (exact zeros, float round-off).
PLOT_FLOOR = 1e-16

#: Tables print metric values below this as ``~0`` (KL and exploitability round-off around 0).
TINY = 1e-15

#: ``run.json`` stores the target equilibrium's probabilities when it has at most this many entries.
EQUILIBRIUM_MAX_STORED = 10_000

#: Probabilities above this count as the equilibrium's support in tables.
SUPPORT_THRESHOLD = 1e-6

#: metric -> (history column of the last iterate, of the average, scale, axis label)
METRICS: dict[str, tuple[str, str, float, str]] = {
    "expl": ("expl_last", "expl_avg", 1.0, "exploitability"),
    "reg_expl": ("reg_expl_last", "reg_expl_avg", 1.0, "regularized exploitability"),
    "dg": ("reg_expl_last", "reg_expl_avg", 2.0, "DG_tau (regularized duality gap)"),
    "kl_target": ("kl_target_last", "kl_target_avg", 1.0, "KL(target || pi)"),
}


# ============================================================================ generic writers
def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (numpy arrays/scalars converted; NaN kept as ``NaN``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=1, default=str, allow_nan=True))
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json` (or :meth:`SolveResult.to_json`)."""
    return json.loads(Path(path).read_text())


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV; ``columns`` fixes the order (default: keys in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: _csv_value(r.get(c)) for c in columns})
    return path


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # full precision, round-trips through float()
    return v


def format_number(v: Any, digits: int = 3, tiny: float | None = None) -> str:
    """Compact human formatting: ``0``, ``0.125``, ``3.4e-07``, ``nan`` -> ``-``; other types via ``str``.

    With ``tiny``, floats with ``|v| < tiny`` print as ``~0`` (round-off around an exact zero).
    """
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "-"
        if x == 0:
            return "0"
        if tiny is not None and abs(x) < tiny:
            return "~0"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if 1e-3 <= abs(x) < 1e4:
            return f"{x:.{digits}g}"
        return f"{x:.{max(digits - 2, 0)}e}" if digits > 2 else f"{x:.0e}"
    return str(v)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    digits: int = 3,
    tiny: float | None = None,
) -> str:
    """A GitHub-flavoured markdown table.

    Args:
        rows: one mapping per row.
        columns: keys, or ``(key, header)`` pairs; missing values print as ``-``.
        digits: significant digits for floats (:func:`format_number`).
        tiny: floats below this in absolute value print as ``~0``.

    Examples:
        >>> print(markdown_table([{"alg": "egpo", "kl": 1.5e-9}], ["alg", ("kl", "KL")]))
        | alg | KL |
        |---|---|
        | egpo | 1.5e-09 |
    """
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [format_number(r.get(k), digits, tiny).replace("|", "\\|") for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Curve:
    """One line of a plot: ``y`` against ``x``, with a matplotlib ``linestyle`` and an optional ``color``.

    ``legend=False`` keeps the line out of the legend (e.g. the dashed average of an algorithm whose
    solid last-iterate line is already listed).  ``panel`` puts the line on its own axes (one subplot per
    distinct panel, titled by it): quantities of different kinds (exploitability, KL) never share an axis.
    ``marker``/``markevery`` draw markers on a subset of the points; :func:`plot_curves` gives every
    legend curve its own marker at its own offset, so that a curve lying exactly on another stays visible.
    """

    label: str
    x: Sequence[float]
    y: Sequence[float]
    linestyle: str = "-"
    color: str | None = None
    legend: bool = True
    linewidth: float = 1.6
    panel: str | None = None
    marker: str | None = None
    markevery: Any = None


#: Strong, distinguishable colours (tab10 without its pink and grey, plus darker extras); no pale tints.
COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#c2185b", "#000000", "#bcbd22", "#17becf", "#1a237e", "#006064",
)  # fmt: skip

#: Markers cycled over the legend curves (with :data:`COLORS`, every curve differs in two ways).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")

#: Markers per curve on a plot (spread over the points, each curve at its own offset).
MARKS_PER_CURVE = 8


def _colors(k: int) -> list[str]:
    return [COLORS[i % len(COLORS)] for i in range(k)]


def _style_markers(curves: Sequence[Curve]) -> None:
    """Give each legend curve without a marker its own marker and a distinct offset along the x axis.

    Curve ``i`` of ``k`` marks every ``s``-th point starting at ``floor(i s / k)``, with ``s`` the stride for
    :data:`MARKS_PER_CURVE` marks but at least ``k`` (when the points allow): two curves that coincide point
    for point show their markers at different places.  Curves with ``legend=False`` (averages drawn beside a listed curve) inherit the
    marker of the listed curve of the same colour.
    """
    listed = [c for c in curves if c.legend and c.marker is None]
    index = {label: i for i, label in enumerate(dict.fromkeys(c.label for c in listed))}  # one style per label
    k = len(index)
    by_color: dict[Any, tuple[str, Any]] = {}
    for c in listed:
        i, n = index[c.label], len(c.x)
        stride = max(1, n // MARKS_PER_CURVE, min(k, n))  # at least k apart when there are few points
        c.marker = MARKERS[i % len(MARKERS)]
        c.markevery = ((i * stride // k) % stride, stride)
        by_color[c.color] = (c.marker, c.markevery)
    for c in curves:
        if not c.legend and c.marker is None and c.color in by_color and c.color is not None:
            c.marker, c.markevery = by_color[c.color]


def curves_figure(
    series: Iterable[Curve | Mapping[str, Any]],
    xlabel: str,
    ylabel: str,
    logy: bool = True,
    title: str | None = None,
    styles: Mapping[str, str] | None = None,
    floor: float = PLOT_FLOOR,
    logx: bool = False,
    markers: bool = True,
) -> Any:
    """The matplotlib ``Figure`` that :func:`plot_curves` saves (Agg canvas, no pyplot state).

    One subplot per distinct :attr:`Curve.panel` (in order of first appearance; its name is the subplot's
    y label, ``ylabel`` when there is a single unnamed panel).  With ``markers``, every legend curve gets
    its own marker at its own offset (:func:`_style_markers`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    curves = [c if isinstance(c, Curve) else Curve(**c) for c in series]
    curves = [Curve(**vars(c)) for c in curves]  # styled copies; the caller's curves stay as given
    if markers:
        _style_markers(curves)
    panels = list(dict.fromkeys(c.panel for c in curves)) or [None]
    n_legend = len({c.label for c in curves if c.legend}) + (len(styles) if styles else 0)
    wide = n_legend > 8
    fig = Figure(figsize=(5.2 * len(panels) + (1.8 if wide else 0.0), 4.6 if len(panels) > 1 else 5.0), dpi=110)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(panels), j + 1) for j in range(len(panels))]
    clipped = False
    for ax, panel in zip(axes, panels):
        for c in (c for c in curves if c.panel == panel):
            x = np.asarray(c.x, dtype=float)
            y = np.asarray(c.y, dtype=float)
            if logy:
                low = np.isfinite(y) & (y <= floor)
                clipped |= bool(low.any())
                y = np.where(low, floor, y)
            if logx:
                keep = x > 0
                x, y = x[keep], y[keep]
            ax.plot(
                x, y, linestyle=c.linestyle, color=c.color, lw=c.linewidth, marker=c.marker, markevery=c.markevery,
                ms=5 if c.legend else 3.5, label=c.label if c.legend else "_nolegend_",
            )  # fmt: skip
        if logy:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel if panel is not None else ylabel)
        ax.grid(True, which="major", alpha=0.35)
    if clipped:
        fig.text(0.01, 0.005, f"values below {floor:.0e} (exact zeros, round-off) are drawn at {floor:.0e}",
                 fontsize=7, color="0.4")  # fmt: skip
    if title:
        if len(axes) == 1:
            axes[0].set_title(title)
        else:
            fig.suptitle(title)
    handles, labels = [], []
    for ax in axes:  # one legend for all panels: a curve on several panels is listed once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    for ls, text in (styles or {}).items():
        handles.append(Line2D([], [], color="0.3", linestyle=ls))
        labels.append(text)
    if handles:
        if wide or len(axes) > 1:
            axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        else:
            axes[0].legend(handles, labels, loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(
    series: Iterable[Curve | Mapping[str, Any]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    logy: bool = True,
    title: str | None = None,
    styles: Mapping[str, str] | None = None,
    floor: float = PLOT_FLOOR,
    logx: bool = False,
    markers: bool = True,
) -> Path:
    """Plot curves into a PNG (matplotlib Agg canvas, no pyplot state).

    Args:
        series: :class:`Curve` objects or dicts with the same fields.
        path: output ``.png``.
        xlabel: x-axis label.
        ylabel: y-axis label (for curves without a ``panel``).
        title: figure title.
        logy: log-scale y axis; values ``<= floor`` (exact zeros, round-off) are drawn at ``floor``.
        styles: extra legend entries for line styles, e.g. ``{"-": "last iterate", "--": "average"}``.
        floor: the lowest value drawn on a log axis.
        logx: log-scale x axis (points at ``x <= 0`` dropped).
        markers: give every legend curve its own marker at its own offset, so coinciding curves stay visible.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = curves_figure(series, xlabel, ylabel, logy, title, styles, floor, logx, markers)
    fig.savefig(path)
    return path


#: Readable names of the metrics the LLM trainer logs (``metrics.jsonl`` keys), for plot axes.
METRIC_NAMES: dict[str, str] = {
    "exploitability": "exploitability  max_y P(y > π) − 1/2",
    "kl_target": "KL(π*_τ || π)  to the regularised equilibrium",
    "invalid_mass": "probability of invalid answers",
    "reg_exploitability": "regularised exploitability",
    "loss": "training loss",
    "win_rate": "win rate",
    "queries": "preference-oracle queries",
    "iteration": "iteration",
}


def metric_name(key: str) -> str:
    """The readable name of a logged metric (:data:`METRIC_NAMES`; ``a/b`` keys as ``b (a)``)."""
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    if "/" in key:
        head, tail = key.split("/", 1)
        return f"{METRIC_NAMES.get(head, head.replace('_', ' '))} ({tail})"
    return key.replace("_", " ")


def history_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str], *, x: str = "iteration"
) -> list[Curve]:
    """The curves :func:`plot_metric_histories` draws: one per run and metric (panel), labelled by the run.

    Runs whose curves are identical on every metric share one curve labelled ``"omd = inpo"``.
    """
    merged: dict[tuple, list[str]] = {}
    for label, rows in runs.items():
        key = tuple(tuple((r[x], r[k]) for r in rows if r.get(k) is not None and x in r) for k in keys)
        merged.setdefault(key, []).append(label)
    curves = []
    for color, (series, labels) in zip(_colors(len(merged)), merged.items()):
        for k, pts in zip(keys, series):
            if pts:
                xs, ys = zip(*pts)
                curves.append(Curve(" = ".join(labels), xs, ys, color=color, linewidth=2.0, panel=metric_name(k)))
    return curves


def plot_metric_histories(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    keys: Sequence[str] = ("exploitability", "kl_target"),
    *,
    x: str = "iteration",
    title: str | None = None,
) -> Path | None:
    """One log-scale panel per metric in ``keys`` (readable names), one curve per run; the LLM ``curves.png``.

    Runs whose curves are identical on every panel share one line and one legend entry (``omd = inpo``).

    Args:
        runs: ``{label: rows}``, each row a logged dict (``metrics.jsonl``) with ``x`` and some of ``keys``.
        path: output PNG.
        keys: metrics to plot, one panel each; keys no run logged are left out.
        x: the x-axis key.
        title: figure title (default: the metrics and the number of runs).

    Returns:
        ``path``, or None when no run logged any of ``keys``.
    """
    keys = [k for k in keys if any(k in r for rows in runs.values() for r in rows)]
    if not keys:
        return None
    curves = history_curves(runs, keys, x=x)
    if title is None:
        title = " and ".join(metric_name(k).split("  ")[0] for k in keys) + f" during training ({len(runs)} runs)"
    return plot_curves(curves, path, xlabel=metric_name(x), ylabel="", logy=True, title=title)


# ============================================================================ one run
def _floats(x: Any) -> list[float]:
    arr = np.atleast_1d(np.asarray(x, dtype=float))
    return [float(v) for v in arr]


def run_record(
    result: Any,
    game: Any,
    *,
    game_name: str,
    label: str,
    target: Any = None,
    target_kind: str | None = None,
    target_tau: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary of one solve that a sweep summary reads back (``run.json``).

    Besides the settings and the last history row it stores the final metrics *per context*
    (``contexts``), so a batched game of ``C`` contexts (e.g. ``C`` independent random games) can be
    reported by median/max over its contexts.

    Args:
        result: the :class:`~nashalign.result.SolveResult`.
        game: the (numpy) game it was run on.
        game_name: the game's name in tables and file names.
        label: the row label (usually the algorithm's config name).
        target: the equilibrium ``KL(target || pi)`` was measured against, or None.
        target_kind: a description of ``target`` (``"Nash"``, ``"regularized Nash (tau=0.1)"``).
        target_tau: KL strength of the equilibrium the run converges to when it is not the run's ``tau``
            (``alg.target_tau`` of the prox-point rules: 0 for mpo/comal); picks the table metric too.
        extra: more keys to store (overrides, job number, ...).
    """
    from nashalign import metrics

    settings = result.settings
    hp = settings.get("hyperparameters", {})
    tau = float(hp.get("tau", 0.0) or 0.0)
    ref = game.ref
    contexts: dict[str, list[float]] = {}
    for name, pol in (("last", result.last), ("avg", result.average)):
        pol = np.asarray(pol, dtype=float)
        contexts[f"expl_{name}"] = _floats(metrics.exploitability(game, pol))
        if tau > 0:
            contexts[f"reg_expl_{name}"] = _floats(metrics.exploitability(game, pol, tau=tau, ref=ref))
        if target is not None:
            contexts[f"kl_target_{name}"] = _floats(metrics.kl_divergence(game, target, pol))
    equilibrium: dict[str, Any] | None = None
    if target is not None:
        tgt = np.asarray(target, dtype=float).reshape(game.num_contexts, game.num_responses)
        t_tau = tau if target_tau is None else float(target_tau)
        expl = metrics.exploitability(game, tgt, tau=t_tau, ref=ref) if t_tau > 0 else metrics.exploitability(game, tgt)
        equilibrium = {
            "kind": target_kind,
            "exploitability": _floats(expl),  # regularised exploitability when tau > 0 (zero at pi*_tau)
            # the policy itself only for games small enough to read (it is in the sweep's equilibria cache)
            "policy": tgt.tolist() if tgt.size <= EQUILIBRIUM_MAX_STORED else None,
            "support": [int(k) for k in (tgt > SUPPORT_THRESHOLD).sum(-1)],
        }
    hist = result.history
    final = {c: hist.last(c) for c in hist.rows[-1]} if len(hist) else {}
    rec: dict[str, Any] = {
        "game": game_name,
        "label": label,
        "algorithm": settings.get("algorithm"),
        "hyperparameters": hp,
        "eta": hp.get("eta"),
        "tau": tau,
        "target_tau": tau if target_tau is None else float(target_tau),
        "mode": settings.get("mode"),
        "steps": settings.get("steps"),
        "seed": settings.get("seed"),
        "num_contexts": settings.get("num_contexts"),
        "num_responses": settings.get("num_responses"),
        "target": target_kind if target is not None else None,
        "status": result.status,
        "diverged_at": result.diverged_at,
        "message": result.message,
        "final": final,
        "contexts": contexts,
        "equilibrium": equilibrium,
        "settings": settings,
    }
    if extra:
        rec.update(extra)
    return rec


def write_run(out_dir: str | Path, result: Any, record: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``history.json``, ``history.csv``, ``result.json`` and ``run.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "history.json": write_json(result.history.as_dict(), out / "history.json"),
        "history.csv": out / "history.csv",
        "result.json": out / "result.json",
        "run.json": write_json(record, out / "run.json"),
    }
    result.history.to_csv(paths["history.csv"])
    result.to_json(paths["result.json"])
    return paths


def _auto_metric(run: Mapping[str, Any], metric: str) -> str:
    if metric != "auto":
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose 'auto' or one of {sorted(METRICS)}.")
        return metric
    if float(run.get("target_tau", run.get("tau")) or 0.0) > 0:
        return "kl_target" if run.get("target") else "reg_expl"
    return "expl"


def _metric_label(m: str, run: Mapping[str, Any]) -> str:
    if m == "kl_target":
        return "KL to pi*_tau" if float(run.get("target_tau", run.get("tau")) or 0) > 0 else "KL to pi*"
    return {"expl": "expl", "reg_expl": "reg. expl", "dg": "DG_tau"}[m]


def one_line(record: Mapping[str, Any], metric: str = "auto") -> str:
    """``label on game: <metric> last=..., avg=... (status, time)`` for the log of one run."""
    m = _auto_metric(record, metric)
    col_last, col_avg, scale, _ = METRICS[m]
    fin = record.get("final", {})
    last = scale * float(fin.get(col_last, math.nan))
    avg = scale * float(fin.get(col_avg, math.nan))
    return (
        f"{record['label']} on {record['game']} (eta={format_number(record.get('eta'))}, "
        f"tau={format_number(record.get('tau'))}, {record.get('steps')} steps, {record.get('mode')}): "
        f"{_metric_label(m, record)} last={format_number(last)} avg={format_number(avg)} "
        f"[{record.get('status')}, {format_number(fin.get('time'))} s]"
    )


# ============================================================================ sweeps
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

