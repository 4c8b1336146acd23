"""Hydra side of the apps: structured-config schemas, the equilibrium cache and the sweep-summary callback.

* :class:`RunConfig` is the schema of the ``run`` group (``conf/run/*.yaml`` extend ``base_run``), so a
  typo (``run.stepz=5``) or a wrong type (``run.steps=abc``) fails at composition and bad values
  (``run.steps=-1``) fail in :func:`run_settings` with a message saying what to change.
* :func:`reference_target` solves the exact equilibrium a run is measured against (cvxpy), once per
  game config and ``tau``: cached in-process and on disk in the sweep directory, so the 33 jobs of
  ``make demo`` solve 6 programs, not 33, under any launcher.
* :class:`SweepSummary` (``hydra.callbacks.summary``) prints a ``[k/N]`` progress tag per job and, at
  the end of a sweep, writes and prints the summary table and the plots (:mod:`nashalign.reporting`).
* :func:`instantiate_algorithm` and :func:`algorithm_label` build the ``algorithm`` node and name its row: a
  custom ``algorithm._target_=my_pkg.MyAlg`` on top of a shipped option is labelled by its own ``name``;
  :func:`inline_group_overrides` lets ``game='{_target_: ..., P: [...]}'`` replace the group's option.
* :func:`egpo_repo_algorithm` builds the baselines of EGPO's tabular simulation from the repo's
  ``(beta, lr)`` (the ``egpo_tabular`` experiment).

Importing this module registers the schemas in Hydra's ``ConfigStore``; the apps import it before
``@hydra.main`` runs and the compose tests import it before composing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nashalign import reporting
from nashalign.algorithms.registry import register_sweep_resolver

log = logging.getLogger(__name__)

__all__ = [
    "RunConfig",
    "SweepSummary",
    "algorithm_label",
    "egpo_repo_algorithm",
    "inline_group_overrides",
    "instantiate_algorithm",
    "job_tag",
    "reference_target",
    "register_configs",
    "run_settings",
]


# ============================================================================ schemas
@dataclass
class RunConfig:
    """How one tabular run is executed (the ``run`` group); every field maps onto :func:`nashalign.solve`."""

    mode: str = "exact"
    """``exact`` (exact win rates) or ``sampled`` (Bernoulli preference feedback, loss on a softmax table)."""
    steps: int = 2000
    """Iterations T."""
    record_every: int | None = None
    """Record the history every this many steps (default: steps // 200)."""
    backend: str = "numpy"
    """``numpy`` (float64) or ``torch``."""
    device: str | None = None
    """Torch device (``cpu``, ``cuda``) with ``backend=torch``."""
    seed: int = 0
    """Seed of the sampled mode."""
    target: str = "auto"
    """``auto``: measure KL to the exact equilibrium from cvxpy (regularized when tau > 0); ``none``: skip it."""
    tol: float | None = None
    """Stop early once the monitored exploitability is below tol."""
    throw: bool = False
    """Raise on divergence (NaN); False records status=diverged and lets a sweep go on."""
    progress: bool = False
    """A tqdm bar inside each run."""
    label: str | None = None
    """Row label in tables and plots (default: the algorithm config's name)."""
    batch: int = 64
    """Sampled mode: contexts sampled per iteration."""
    inner_steps: int = 50
    """Sampled mode: optimiser steps on the loss per iteration (phase)."""
    optimizer: str = "adam"
    """Sampled mode: ``adam``, ``adamw`` or ``sgd``."""
    lr: float | None = None
    """Sampled mode: optimiser learning rate (default 0.05 for Adam, 0.5 for SGD)."""
    estimator: str | None = None
    """Sampled mode: ``pair``, ``opponent`` or ``winrate`` (default: the algorithm's)."""

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "sampled"):
            raise ValueError(f"run.mode must be 'exact' or 'sampled', got {self.mode!r} (e.g. run=sampled).")
        if self.steps < 1:
            raise ValueError(f"run.steps must be >= 1, got {self.steps}: set e.g. run.steps=2000.")
        if self.record_every is not None and self.record_every < 1:
            raise ValueError(f"run.record_every must be >= 1 (or null for steps // 200), got {self.record_every}.")
        if self.backend not in ("numpy", "torch"):
            raise ValueError(f"run.backend must be 'numpy' or 'torch', got {self.backend!r}.")
        if self.target not in ("auto", "none"):
            raise ValueError(
                f"run.target must be 'auto' (exact equilibrium from cvxpy) or 'none', got {self.target!r}."
            )
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"run.tol must be > 0 (or null), got {self.tol}.")
        if self.batch < 1 or self.inner_steps < 1:
            raise ValueError(f"run.batch and run.inner_steps must be >= 1, got {self.batch} and {self.inner_steps}.")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"run.lr must be > 0 (or null for the optimiser's default), got {self.lr}.")


def register_configs() -> None:
    """Register the schemas: ``run/base_run`` (extended by ``conf/run/*.yaml``)."""
    cs = ConfigStore.instance()
    cs.store(group="run", name="base_run", node=RunConfig)


register_configs()
register_sweep_resolver()  # ${nashalign_algorithms:} in conf/tabular/experiment/demo.yaml


def run_settings(node: Any) -> RunConfig:
    """The validated :class:`RunConfig` of a composed ``cfg.run`` node (raises ``ValueError`` on bad values)."""
    if isinstance(node, RunConfig):
        node.__post_init__()
        return node
    obj = OmegaConf.to_object(node) if isinstance(node, DictConfig) else RunConfig(**dict(node))
    if not isinstance(obj, RunConfig):  # a plain dict node (no schema): validate through the dataclass
        obj = RunConfig(**obj)
    return obj


# ============================================================================ building and naming the algorithm
def instantiate_algorithm(node: Any) -> Any:
    """Instantiate an ``algorithm`` config node, leaving out the keys whose value is null.

    In every shipped ``conf/algorithm/*.yaml`` a null (``form: null``, ``mixture: null``) means "the
    constructor's default", so leaving it out changes nothing for them; it lets a custom class given by
    ``algorithm._target_=my_pkg.MyAlg`` on top of any option receive only the keys it can take (Hydra 1.3
    cannot delete a null key with ``~algorithm.mixture``: hydra issue 2829).
    """
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if not isinstance(values, dict) or "_target_" not in values:
        raise ValueError(
            f"the algorithm config needs a _target_ (e.g. algorithm=egpo or algorithm._target_=my_pkg.MyAlg), "
            f"got {values!r}."
        )
    return instantiate({k: v for k, v in values.items() if v is not None})


def _option_target(group: str, choice: str) -> str | None:
    """The ``_target_`` of option ``choice`` of ``group`` as its file in the app's search path sets it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        sources = HydraConfig.get().runtime.config_sources
    except Exception:  # outside a Hydra app
        return None
    for src in sources:
        if src.schema != "file":
            continue
        path = Path(src.path) / group / f"{choice}.yaml"
        if path.is_file():
            target = OmegaConf.load(path).get("_target_")
            return str(target) if target is not None else None
    return None


def algorithm_label(node: Any, choice: str | None, algorithm: Any) -> str:
    """The row label of a run: the option's name (``nash_md_pg``) unless ``_target_`` was replaced.

    ``algorithm._target_=my_pkg.HalfMix`` on top of ``algorithm=omd`` builds a ``HalfMix``, which is
    labelled by its own ``name`` (``half_mix``) in the log line, ``run.json`` and ``summary.md``, as in
    ``result.json``; so is an inline or option-less algorithm node.
    """
    if choice is None:
        return str(algorithm.name)
    shipped = _option_target("algorithm", choice)
    target = node.get("_target_") if hasattr(node, "get") else None
    if shipped is not None and target is not None and str(target) != shipped:
        return str(algorithm.name)
    return str(choice)


_INLINE = re.compile(r"^(?P<group>[A-Za-z_][\w]*)=\s*\{")


def inline_group_overrides(argv: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Let ``group='{_target_: ..., key: value}'`` on the command line replace the group's default option.

    Hydra merges a dict given to a group key into the default option (``game={...}`` onto ``rps``: ``Key 'P'
    is not in struct``).  Each such argument becomes ``~group`` and ``+group={...}``: the default option is
    dropped and the inline node is the whole ``group`` config.  Other arguments are returned unchanged.

    Args:
        argv: ``sys.argv`` (the program name first).
        groups: the app's group names that may be given inline (``game``, ``algorithm``).
    """
    out = list(argv[:1])
    for arg in argv[1:]:
        m = _INLINE.match(arg)
        if m and m.group("group") in groups and f"~{m.group('group')}" not in argv:
            out += [f"~{m.group('group')}", f"+{arg}"]
        else:
            out.append(arg)
    return out


# ============================================================================ exact targets
_EQUILIBRIA: dict[str, np.ndarray | None] = {}


def reference_target(
    game: Any, tau: float, key: str | None = None, cache_dir: str | Path | None = None
) -> tuple[np.ndarray | None, str]:
    """The exact equilibrium to measure a run against, and its description.

    ``tau > 0``: the regularized equilibrium ``pi*_tau`` of ``game`` with its reference
    (:func:`~nashalign.equilibrium.solve_regularized_nash`); ``tau = 0``: a Nash equilibrium
    (:func:`~nashalign.equilibrium.solve_nash`).  Solved once per ``(key, tau)``: kept in this process
    and, with ``cache_dir``, in ``cache_dir/equilibria/<hash>.npy`` for other processes (joblib).

    Args:
        game: the :class:`~nashalign.game.PreferenceGame`.
        tau: the run's KL strength.
        key: identifies the game (e.g. its resolved config YAML); default: a hash of ``P`` and ``ref``.
        cache_dir: directory for the on-disk cache (e.g. the sweep directory), or None.

    Returns:
        ``(target (C, n) or None if the solver failed, description)``.
    """
    from nashalign.equilibrium import solve_nash, solve_regularized_nash

    tau = float(tau)
    kind = f"regularized Nash (tau={tau:g})" if tau > 0 else "Nash"
    if key is None:
        P = np.ascontiguousarray(np.asarray(game.P, dtype=float))
        key = hashlib.sha1(P.tobytes() + np.asarray(game.ref, dtype=float).tobytes()).hexdigest()
    digest = hashlib.sha1(f"{key}|tau={tau!r}".encode()).hexdigest()[:20]
    if digest in _EQUILIBRIA:
        return _EQUILIBRIA[digest], kind
    path = Path(cache_dir) / "equilibria" / f"{digest}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        target = np.load(path)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = solve_regularized_nash(game, tau) if tau > 0 else solve_nash(game)
            target = np.reshape(np.asarray(target, dtype=float), (game.num_contexts, game.num_responses))
        except Exception as err:  # a failed reference must not kill a sweep
            log.warning("no exact %s for this game (%s); KL to the target is not recorded", kind, err)
            target = None
        if path is not None and target is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, target)
            tmp.replace(path)
    _EQUILIBRIA[digest] = target
    return target, kind


# ============================================================================ EGPO's tabular baselines
EGPO_BASELINES = ("oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo")


def egpo_repo_algorithm(baseline: str, beta: float, lr: float, num_responses: int, pg_mixture: float = 0.125) -> Any:
    """The nashalign algorithm equal to one baseline of EGPO's exact tabular simulation (SPEC.md 5.2-5.4).

    The official simulation takes one plain-SGD step (learning rate ``lr``) per iteration on a loss over
    softmax logits.  With the loss averaged over the ``N^2`` ordered pairs (uniform ``rho``), one SGD step
    is exactly one mirror step with ``eta = 4 lr / (N beta)`` (SPEC.md 5.2, 12(e)):

    * ``oipo1`` (Online IPO 1 = OMD): :class:`~nashalign.algorithms.OMD` with that ``eta``;
    * ``egpo``: :class:`~nashalign.algorithms.EGPO` with that ``eta`` (two SGD steps from ``theta_t``);
    * ``nash_md``: :class:`~nashalign.algorithms.NashMD` with that ``eta`` and the repo's mixture weight
      ``true_lr * beta = 2 lr / N`` (``true_lr = 2 lr / (beta N)``): half of the theory's ``eta beta``;
    * ``oipo2`` (Online IPO 2, pairs weighted by ``pi_t``): :class:`~nashalign.algorithms.OnlineIPO`, whose
      ``eta`` *is* the SGD learning rate on the logits of the ``pi``-weighted loss, so ``eta = lr``;
    * ``nash_md_pg``: :class:`~nashalign.algorithms.NashMD` with the free mixture ``pg_mixture`` (0.125, as
      the paper's LLM Nash-MD-PG) and the matched ``eta``.  This is *not* the repo's tabular Nash-MD-PG,
      which is a softmax policy-gradient step against the ``2 lr / N`` mixture; nashalign's tabular rule
      is the mirror step whose fixed point ``BR_beta(mix_0.125(pi, mu))`` Nash-MD-PG with that mixture
      targets (SPEC.md 12(d)).  See ``tabular/README.md`` for what this changes in the numbers.

    Args:
        baseline: one of :data:`EGPO_BASELINES`.
        beta: the KL strength (``tau``).
        lr: the repo's SGD learning rate.
        num_responses: ``N``.
        pg_mixture: the free mixture of ``nash_md_pg``.
    """
    from nashalign.algorithms import EGPO, OMD, NashMD, OnlineIPO

    if baseline not in EGPO_BASELINES:
        raise ValueError(f"unknown EGPO baseline {baseline!r}; choose one of {list(EGPO_BASELINES)}.")
    if not (beta > 0 and lr > 0 and num_responses >= 1):
        raise ValueError(f"need beta > 0, lr > 0, num_responses >= 1; got {beta}, {lr}, {num_responses}.")
    eta = 4.0 * lr / (num_responses * beta)
    if baseline == "oipo1":
        return OMD(eta=eta, tau=beta)
    if baseline == "oipo2":
        return OnlineIPO(eta=lr, tau=beta)
    if baseline == "nash_md":
        return NashMD(eta=eta, tau=beta, mixture=2.0 * lr / num_responses)
    if baseline == "nash_md_pg":
        return NashMD(eta=eta, tau=beta, mixture=pg_mixture)
    return EGPO(eta=eta, tau=beta)


# ============================================================================ progress and the summary callback
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
