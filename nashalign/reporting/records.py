"""One tabular run's record (:mod:`nashalign.reporting`): ``history.json``/``.csv``, ``result.json``, ``run.json``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nashalign.reporting.tables import EQUILIBRIUM_MAX_STORED, METRICS, SUPPORT_THRESHOLD, format_number, write_json

__all__ = ["run_record", "write_run", "one_line"]


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
