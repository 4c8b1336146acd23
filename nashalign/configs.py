"""Hydra side of the apps: structured-config schemas and the names the apps' configs and callbacks use.

* :class:`RunConfig` is the schema of the ``run`` group (``conf/run/*.yaml`` extend ``base_run``), so a
  typo (``run.stepz=5``) or a wrong type (``run.steps=abc``) fails at composition and bad values
  (``run.steps=-1``) fail in :func:`run_settings` with a message saying what to change.
* :func:`reference_target` (re-exported from :mod:`nashalign.equilibrium_cache`) solves the exact equilibrium a
  run is measured against, once per game config and ``tau``;
* :class:`SweepSummary` and :func:`job_tag` (re-exported from :mod:`nashalign.reporting.callbacks`): the
  progress tag and the summary callback, shared with the LLM app's :class:`~nashalign.reporting.callbacks.BenchmarkSummary`.
* :func:`instantiate_algorithm` and :func:`algorithm_label` build the ``algorithm`` node and name its row: a
  custom ``algorithm._target_=my_pkg.MyAlg`` on top of a shipped option is labelled by its own ``name``;
  :func:`inline_group_overrides` lets ``game='{_target_: ..., P: [...]}'`` replace the group's option.
* :func:`egpo_repo_algorithm` (re-exported from :mod:`nashalign.algorithms.egpo_repo`) builds the baselines of EGPO's tabular simulation from the repo's
  ``(beta, lr)`` (the ``egpo_tabular`` experiment).

Importing this module registers the schemas in Hydra's ``ConfigStore``; the apps import it before
``@hydra.main`` runs and the compose tests import it before composing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nashalign.algorithms.egpo_repo import EGPO_BASELINES, egpo_repo_algorithm
from nashalign.algorithms.registry import register_sweep_resolver
from nashalign.equilibrium_cache import reference_target
from nashalign.reporting.callbacks import SweepSummary, job_tag

log = logging.getLogger(__name__)

__all__ = [
    "EGPO_BASELINES",
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
