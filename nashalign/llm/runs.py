"""Benchmark curves of LLM runs: kept as an import path; the code is :mod:`nashalign.reporting.histories`.

The LLM app's report (``summary.md``, ``summary.csv``, ``curves.png``) is written by the same module and the same
kind of Hydra callback as the tabular app's (:class:`nashalign.reporting.callbacks.BenchmarkSummary`).
"""

from __future__ import annotations

from nashalign.reporting.histories import collect_runs, plot_curves, summary_table

__all__ = ["collect_runs", "plot_curves", "summary_table"]
