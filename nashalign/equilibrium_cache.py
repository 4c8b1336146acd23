"""The exact equilibrium each tabular run is measured against, solved once per game and ``tau`` (cvxpy).

:func:`reference_target` caches the solution in this process and on disk in the sweep directory, so the
jobs of ``make demo`` solve one program per (game, ``tau``), not one per job, under any launcher.
Re-exported by :mod:`nashalign.configs`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["reference_target"]

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


