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

The code is split by concern: :mod:`~nashalign.reporting.tables` (writers, formatting, constants),
:mod:`~nashalign.reporting.plots` (curves and panels), :mod:`~nashalign.reporting.records` (one tabular run),
:mod:`~nashalign.reporting.sweeps` (a directory of tabular runs), :mod:`~nashalign.reporting.histories` (the LLM
app's runs) and :mod:`~nashalign.reporting.callbacks` (both apps' Hydra callbacks); every name is importable
from ``nashalign.reporting``.
"""

from __future__ import annotations

from nashalign.reporting.plots import COLORS as COLORS
from nashalign.reporting.plots import MARKERS as MARKERS
from nashalign.reporting.plots import MARKS_PER_CURVE as MARKS_PER_CURVE
from nashalign.reporting.plots import METRIC_NAMES as METRIC_NAMES
from nashalign.reporting.plots import (
    Curve,
    curves_figure,
    history_curves,
    metric_name,
    plot_curves,
    plot_metric_histories,
)
from nashalign.reporting.records import one_line, run_record, write_run
from nashalign.reporting.sweeps import _group_curves as _group_curves
from nashalign.reporting.sweeps import (
    equilibria_rows,
    equilibria_table,
    load_runs,
    plot_results,
    summary_rows,
    write_summary,
)
from nashalign.reporting.tables import EQUILIBRIUM_MAX_STORED as EQUILIBRIUM_MAX_STORED
from nashalign.reporting.tables import METRICS, format_number, markdown_table, read_json, write_csv, write_json
from nashalign.reporting.tables import PLOT_FLOOR as PLOT_FLOOR
from nashalign.reporting.tables import SUPPORT_THRESHOLD as SUPPORT_THRESHOLD
from nashalign.reporting.tables import TINY as TINY

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
