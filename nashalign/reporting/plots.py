"""Plots of :mod:`nashalign.reporting`: :class:`Curve`, log-scale panels (matplotlib on an Agg canvas), metric histories."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nashalign.reporting.tables import PLOT_FLOOR

__all__ = ["Curve", "COLORS", "MARKERS", "MARKS_PER_CURVE", "METRIC_NAMES", "curves_figure", "plot_curves", "metric_name", "history_curves", "plot_metric_histories"]


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
    from nashalign import reporting  # the package's name, so a patched reporting.curves_figure is used

    fig = reporting.curves_figure(series, xlabel, ylabel, logy, title, styles, floor, logx, markers)
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
