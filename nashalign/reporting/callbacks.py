"""The Hydra callbacks that write both apps' reports, through :mod:`nashalign.reporting`.

* :class:`SweepSummary` (tabular app, ``hydra.callbacks.summary`` of ``conf/tabular/tabular.yaml``): a ``[k/N]``
  progress tag per job (:func:`job_tag`) and, at the end, ``summary.md``, ``summary.csv`` and one plot per
  game from the jobs' ``run.json`` (:func:`nashalign.reporting.write_summary`);
* :class:`BenchmarkSummary` (LLM app, ``hydra.callbacks.summary`` of ``conf/llm/llm.yaml``): ``summary.md``,
  ``summary.csv`` and ``curves.png`` from the jobs' ``metrics.jsonl``
  (:func:`nashalign.reporting.histories.write_history_summary`).

Both label every run with the values the sweep varied and list the exact targets the runs were measured against.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nashalign import reporting

__all__ = ["BenchmarkSummary", "SweepSummary", "job_tag"]

_SWEEP_TOTAL: int | None = None


def _sweep_size(config: DictConfig) -> int | None:
    """Number of jobs of a basic-sweeper grid: product of the sweep overrides' lengths (None if unknown)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(config, "hydra.overrides.task") or [])
        counts: dict[str, int] = {}
        for o in OverridesParser.create().parse_overrides(args):
            key = o.get_key_element()
            counts[key] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
        return math.prod(counts.values())
    except Exception:  # progress is cosmetic
        return None


def job_tag() -> str:
    """``"[k/N] "`` for job ``k`` of an ``N``-job sweep (``""`` outside a multirun)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return ""
        total: Any = _SWEEP_TOTAL
        if total is None:
            f = Path(hc.sweep.dir) / ".sweep_total"
            total = f.read_text().strip() if f.exists() else "?"
        return f"[{int(hc.job.num) + 1}/{total}] "
    except Exception:
        return ""


class SweepSummary(Callback):
    """Hydra callback: per-job progress, and at the end the summary table (printed) and the plots.

    Configure in ``conf/tabular/tabular.yaml`` under ``hydra.callbacks.summary``.  It reads the ``run.json`` files
    the jobs wrote (:func:`nashalign.reporting.write_run`), so it works with any launcher.

    Args:
        metric: ``auto`` or one of :data:`nashalign.reporting.METRICS`.
        x_axis: ``auto`` (oracle queries for sampled runs, else iterations), ``step`` or ``queries``.
        group_by: one plot per value of these run keys (``[game]`` or ``[game, tau]``).
        title: heading of ``summary.md``.
        plots: write PNGs.
    """

    def __init__(
        self,
        metric: str = "auto",
        x_axis: str = "auto",
        group_by: Any = ("game",),
        title: str | None = None,
        plots: bool = True,
    ) -> None:
        if metric != "auto" and metric not in reporting.METRICS:
            raise ValueError(
                f"SweepSummary: unknown metric {metric!r}; choose auto or one of {sorted(reporting.METRICS)}."
            )
        if x_axis not in ("auto", "step", "queries"):
            raise ValueError(f"SweepSummary: x_axis must be auto, step or queries, got {x_axis!r}.")
        self.metric = metric
        self.x_axis = x_axis
        self.group_by = tuple(group_by)
        self.title = title
        self.plots = bool(plots)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _SWEEP_TOTAL
        self._started = time.time()
        _SWEEP_TOTAL = _sweep_size(config)
        if _SWEEP_TOTAL is not None:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / ".sweep_total").write_text(str(_SWEEP_TOTAL))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._summarize(Path(str(config.hydra.sweep.dir)), sweep=True)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.run.dir))
        job = kwargs.get("job_return")
        if job is not None and getattr(job, "status", None) is not None and job.status.name == "FAILED":
            err: Any = None
            try:
                _ = job.return_value  # re-raises the job's exception
            except Exception as e:
                err = e
            print(f"run failed ({type(err).__name__}: {err}); nothing summarized and no plot written in {root}")
            return
        self._summarize(root, sweep=False)

    #: A ``run.json`` written up to this many seconds before the callback started counts as current
    #: (file times are coarser than ``time.time()``); older ones are stale runs of an earlier launch.
    _CLOCK_SLACK = 1.0

    def _summarize(self, root: Path, sweep: bool) -> None:
        started = getattr(self, "_started", None)
        since = None if started is None else started - self._CLOCK_SLACK
        runs = reporting.load_runs(root, since=since, recursive=sweep)
        stale = len(reporting.load_runs(root, recursive=sweep)) - len(runs) if since is not None else 0
        if stale:
            print(f"ignored {stale} run.json file(s) under {root} left by an earlier launch")
        if not runs:
            print(f"no run.json from this launch under {root}: nothing to summarize")
            return
        out = reporting.write_summary(
            root,
            runs,
            metric=self.metric,
            x_axis=self.x_axis,
            group_by=self.group_by,
            title=self.title,
            plots=self.plots,
        )
        if sweep:
            if out["equilibria"]:
                print(f"\nExact equilibria (cvxpy), the targets every run is measured against\n\n{out['equilibria']}")
            print(f"\n{self.title or 'Summary'} ({len(runs)} runs)\n\n{out['markdown']}\n")
            print(f"summary: {out['summary_md']} and {out['summary_csv'].name}")
        if out["plots"]:
            print("plots:   " + "\n         ".join(str(p) for p in out["plots"]))


class BenchmarkSummary(Callback):
    """Hydra callback of the LLM app: after a run or a multirun, ``summary.md``, ``summary.csv`` and ``curves.png``.

    Every run is labelled with its algorithm and each swept value (:func:`nashalign.reporting.histories.collect_runs`);
    ``summary.md`` starts with the exact targets ``pi*_tau`` the runs were measured against.

    Args:
        keys: the logged metrics to tabulate and plot (one panel each).
        filename: the plot's file name.
        title: heading of ``summary.md`` and the plot (default: the known-equilibrium benchmark).
    """

    def __init__(
        self, keys: Sequence[str] = ("exploitability", "kl_target"), filename: str = "curves.png",
        title: str | None = None,
    ) -> None:  # fmt: skip
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"BenchmarkSummary: keys must be a list of metric names, got {keys!r}.")
        self.keys = list(keys)
        self.filename = filename
        self.title = title

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self.write(Path(str(config.hydra.sweep.dir)))

    def on_run_end(self, config: Any, **kwargs: Any) -> None:  # single run: the run's own directory
        self.write(Path(str(config.hydra.run.dir)))  # HydraConfig is already cleared when run-end callbacks run

    def write(self, root: Path) -> dict[str, Any] | None:
        """Write the report under ``root`` and print the tables; None when ``root`` holds no ``metrics.jsonl``."""
        from nashalign.reporting.histories import write_history_summary

        out = write_history_summary(root, self.keys, filename=self.filename, title=self.title)
        if out is None:
            return None
        if out["targets"]:
            print(f"Exact targets (cvxpy), what every run is measured against\n\n{out['targets']}\n")
        print(out["markdown"])
        print(f"summary: {out['summary_md']} and {out['summary_csv'].name}")
        if out["plot"] is not None:
            print(f"curves: {out['plot']}")
        return out
