"""The driver: runs any algorithm on a preference game, exactly or from sampled preference feedback.

The driver owns everything around the update (DESIGN.md 4.4): the loop over iterations and phases,
the uniform average of the iterates, recording, divergence detection, progress and checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nashalign import _xp
from nashalign._validation import check_int, check_positive, check_seed
from nashalign.algorithms import _blocks
from nashalign.algorithms.base import Algorithm, State
from nashalign.algorithms.registry import get_algorithm
from nashalign.game import PreferenceGame
from nashalign.metrics import expl_from_win_rates, kl_logp, reg_expl_from_win_rates
from nashalign.result import History, SolveResult

#: Above this many (context, response) cells, ``target="auto"`` does not call cvxpy.
AUTO_TARGET_MAX_CELLS = 20_000
#: Below this ``tau``, ``target="auto"`` does not call cvxpy either: the exponential-cone program then misses its
#: 1e-12 accuracy on some random games (measured: 2 of 4 8-response games at tau = 1e-8, none at 1e-6).
AUTO_TARGET_MIN_TAU = 1e-6

#: Sampled mode reports ``status="collapsed"`` once this many iterations in a row had every sampled row repeat one
#: response (no signal left) ...
COLLAPSE_PATIENCE = 5
#: ... while the last iterate's mean exploitability is above this (a collapse onto an equilibrium is no failure).
COLLAPSE_EXPL = 1e-3

#: ``context_block="auto"``: bytes of ``P`` per block of contexts in the blocked exact loop.  A few MB stays
#: in the L2/L3 cache of current CPUs while every step of the block runs (measured on a 2-core AMD EPYC
#: with 2 MB L2 per core and 32 MB L3: 4-8 MB blocks are fastest at n = 100, see benchmarks/README.md);
#: smaller blocks pay the per-step Python overhead more often.
BLOCK_BYTES = 4 * 2**20
#: ``context_block="auto"`` blocks only a ``P`` larger than this: a smaller one already stays in the last-level
#: cache between steps, and one block is faster (fewer, larger numpy calls).
BLOCK_MIN_BYTES = 16 * 2**20


@dataclass(frozen=True)
class BlockOptions:
    """How the exact loop walks the contexts (see :func:`solve`).

    Attributes:
        context_block: contexts per block.  ``"auto"`` (default): with numpy, for the registered algorithms,
            blocks of about :data:`BLOCK_BYTES` of ``P`` when ``P`` is larger than :data:`BLOCK_MIN_BYTES` and
            nothing needs the whole batch at every record; ``None``: one block; an int forces that block size.
            The old keyword ``solve(..., context_block=...)`` sets it.
    """

    context_block: int | str | None = "auto"


@dataclass(frozen=True)
class PrecisionOptions:
    """Floating-point types of a run (see :func:`solve`).

    Attributes:
        dtype: dtype of the policies, updates, averages and metrics (default float64).  Old keyword: ``dtype=``.
        p_dtype: dtype of ``P`` alone in exact mode (default ``dtype``): float32 computes ``P pi`` in float32,
            reading half the bytes per step.  Old keyword: ``p_dtype=``.
    """

    dtype: Any = None
    p_dtype: Any = None


@dataclass(frozen=True)
class CheckpointOptions:
    """Saving and resuming a run (see :func:`solve`).

    Attributes:
        path: ``.npz`` file the run is saved to every ``every`` steps and at the end; an existing file is resumed
            from (the same settings must be passed).  Old keyword: ``checkpoint=``.
        every: steps between checkpoints (``None``: only at the end).  Old keyword: ``checkpoint_every=``.
    """

    path: str | Path | None = None
    every: int | None = None


#: The old keywords of :func:`solve` and the (option argument, field) each one sets.
_LEGACY_KEYWORDS = {
    "context_block": ("blocking", "context_block"),
    "dtype": ("precision", "dtype"),
    "p_dtype": ("precision", "p_dtype"),
    "checkpoint": ("checkpointing", "path"),
    "checkpoint_every": ("checkpointing", "every"),
}
_OPTION_TYPES = {"blocking": BlockOptions, "precision": PrecisionOptions, "checkpointing": CheckpointOptions}


def _options(given: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The option objects (defaults where ``None``), with the old keywords popped from ``kwargs`` into them."""
    opts = {}
    for name, cls in _OPTION_TYPES.items():
        val = given[name]
        if val is not None and not isinstance(val, cls):
            raise TypeError(f"{name} must be a nashalign.{cls.__name__} or None, got {type(val).__name__}.")
        opts[name] = cls() if val is None else val
    for key, (name, field) in _LEGACY_KEYWORDS.items():
        if key in kwargs:
            if given[name] is not None:
                raise ValueError(
                    f"{key}= and {name}= were both given; pass {key} in one place only "
                    f"({name}={_OPTION_TYPES[name].__name__}({field}=...))."
                )
            opts[name] = replace(opts[name], **{field: kwargs.pop(key)})
    return opts


def _build_algorithm(algorithm: str | Algorithm, eta: Any, tau: Any, kwargs: dict[str, Any]) -> Algorithm:
    if isinstance(algorithm, str):
        hp = dict(kwargs)
        if eta is None:
            raise ValueError(f"solve(..., '{algorithm}') needs a step size: pass eta=... (a float or a schedule).")
        hp["eta"] = eta
        hp["tau"] = 0.0 if tau is None else tau
        return get_algorithm(algorithm, **hp)
    if not isinstance(algorithm, Algorithm):
        raise TypeError(
            f"algorithm must be a registered name or an nashalign.algorithms.Algorithm instance, got "
            f"{type(algorithm).__name__}."
        )
    for key, val in (("eta", eta), ("tau", tau), *kwargs.items()):
        if val is not None and getattr(algorithm, key, None) != val:
            raise ValueError(
                f"{key}={val!r} conflicts with the algorithm object's {key}={getattr(algorithm, key, None)!r}; "
                f"pass it in one place only (e.g. algorithm.replace({key}=...))."
            )
    return algorithm


def exact_signal(P: Any, opponents: Any) -> Any:
    """``s = sum_j c_j P(. > q_j)`` for the opponents an algorithm names (``(C, n)``)."""
    sig = None
    for o in opponents:
        w = _blocks.win_rates(P, o.logq)
        term = w if o.coef == 1.0 else o.coef * w
        sig = term if sig is None else sig + term
    return sig


class _WinRates:
    """``P(. > q)`` for the last few log-policies ``q`` the exact loop met, keyed by identity.

    ``P`` is the only large array, so a matvec is the cost of a step: EGPO's phase 0 needs ``P pi_t``, which
    the recorder has just computed; OMWU's ``P pi_{t-1}`` is the previous iteration's ``P pi_t``.  Iterates
    are never modified in place, so the same object means the same policy; results are identical to
    :func:`exact_signal`.
    """

    def __init__(self, P: Any, size: int = 4) -> None:
        self.P, self.size, self.items = P, size, []

    def __call__(self, logq: Any) -> Any:
        for q, w in self.items:
            if q is logq:
                return w
        w = _blocks.win_rates(self.P, logq)
        self.items = [*self.items[1 - self.size :], (logq, w)]
        return w

    def signal(self, opponents: Any) -> Any:
        sig = None
        for o in opponents:
            w = self(o.logq)
            term = w if o.coef == 1.0 else o.coef * w
            sig = term if sig is None else sig + term
        return sig


def _exact_iteration(alg: Algorithm, st: State, win_rates: _WinRates) -> State:
    """One iteration of the exact loop: every phase's step with exact win rates ``s = sum_j c_j P q_j``."""
    for phase in range(alg.phases):
        st = alg.update(st, win_rates.signal(alg.opponents(st, phase)), phase)
    return st


def _metrics(P: Any, win_rates: _WinRates, s: State, avg_sum: Any, n_done: int, tgt: Any, tau: float) -> dict[str, Any]:
    """Per-context values ``(C,)`` of the history columns at state ``s`` (the driver records their means).

    ``expl = max_y P(y > pi) - 1/2``; with ``tau > 0`` also ``tau KL(pi || BR_tau(pi))``; with a target
    ``pi*``, ``KL(pi* || pi)``; each for the last iterate ``pi_t`` and the average ``avg_sum / n_done``.
    ``P pi_t`` comes from ``win_rates`` (and serves the next exact step).
    """
    pi, w = _xp.exp(s.logp), win_rates(s.logp)
    if n_done > 0:
        log_avg = _xp.log(avg_sum / n_done)
        pi_avg = _xp.exp(log_avg)
        w_avg = _xp.matvec(P, pi_avg)
    else:
        log_avg, pi_avg, w_avg = s.logp, pi, w
    out = {"expl_last": expl_from_win_rates(w), "expl_avg": expl_from_win_rates(w_avg)}
    if tau > 0:
        out["reg_expl_last"] = reg_expl_from_win_rates(w, pi, s.logp, s.logmu, tau)
        out["reg_expl_avg"] = reg_expl_from_win_rates(w_avg, pi_avg, log_avg, s.logmu, tau)
    if tgt is not None:
        out["kl_target_last"] = kl_logp(tgt, s.logp)
        out["kl_target_avg"] = kl_logp(tgt, log_avg)
    return out


def _drift_message(m: float, t: int, m0: float, eta: Any, tau: float) -> str:
    return (
        f"the last iterate moved away from the regularised equilibrium: regularised exploitability "
        f"{m:.3g} at step {t} > {max(2.0 * m0, m0 + 1e-3):.3g} (start {m0:.3g}); eta={eta} "
        f"is likely above this rule's stability limit for tau={tau}."
    )


def _resolve_block(
    context_block: Any, alg: Algorithm, P: Any, *, mode: str, tol: Any, checkpoint: Any, state: Any, progress: bool
) -> int | None:
    """Contexts per block of the blocked exact loop, or None for the one-block loop.

    ``"auto"``: blocks of about :data:`BLOCK_BYTES` of ``P`` when ``P`` is larger than :data:`BLOCK_MIN_BYTES`,
    for the registered algorithms (whose steps act on each context separately) with the numpy backend (torch
    on CPU was measured slower blocked: its batched matmul is not bandwidth-bound and its per-call overhead
    is larger; CUDA has no cache to block for), when nothing needs the whole batch at every record (``tol``,
    checkpoints, a progress bar, a given state, sampled mode); an int forces blocks of that many contexts (any
    backend) and raises if one of those is set.
    """
    if context_block is None:
        return None
    blockers = [
        name for name, on in (
            ("mode='sampled'", mode != "exact"), ("tol", tol is not None), ("checkpoint", checkpoint is not None),
            ("state", state is not None), ("progress=True", bool(progress)),
        ) if on
    ]
    C, n = int(P.shape[0]), int(P.shape[-1])
    if isinstance(context_block, str):
        if context_block != "auto":
            raise ValueError(f"context_block must be 'auto', None or a positive int, got {context_block!r}.")
        from nashalign.algorithms.registry import ALGORITHMS

        registered = ALGORITHMS.get(alg.name) is type(alg)
        if blockers or not registered or _xp.is_torch(P) or C * n * n * P.itemsize <= BLOCK_MIN_BYTES:
            return None
        block = max(1, BLOCK_BYTES // (n * n * P.itemsize))
    else:
        if isinstance(context_block, bool) or not isinstance(context_block, (int, np.integer)) or context_block < 1:
            raise ValueError(f"context_block must be 'auto', None or a positive int, got {context_block!r}.")
        if blockers:
            raise ValueError(
                f"context_block={context_block} runs each block of contexts to the end before the next, which "
                f"cannot honour {', '.join(blockers)} (they need the whole batch at every record); pass "
                "context_block=None (or 'auto', which falls back by itself)."
            )
        block = int(context_block)
    return block if block < C else None


def _target_logp(game: PreferenceGame, target: Any, tau: float, logmu: Any) -> Any:
    if target is None or (isinstance(target, str) and target == "none"):
        return None
    if isinstance(target, str):
        if target != "auto":
            raise ValueError(f"target must be 'auto', None or a policy array, got {target!r}.")
        if tau < AUTO_TARGET_MIN_TAU or game.num_contexts * game.num_responses > AUTO_TARGET_MAX_CELLS:
            return None
        from nashalign.equilibrium import solve_regularized_nash

        ref = _xp.exp(logmu)
        tgt = solve_regularized_nash(game.to("numpy"), tau, ref=_xp.to_numpy(ref))
        return _xp.like(np.log(np.reshape(tgt, (game.num_contexts, game.num_responses))), game.ref)
    pi = game.policy(target, "target")
    return _xp.log(pi)


def solve(
    game: PreferenceGame,
    algorithm: str | Algorithm,
    *,
    eta: Any = None,
    tau: float | None = None,
    steps: int = 1000,
    init: Any = None,
    mode: str = "exact",
    ref: Any = None,
    target: Any = "auto",
    tol: float | None = None,
    record_every: int | None = None,
    seed: int | None = None,
    backend: str = "numpy",
    device: Any = None,
    batch: int = 64,
    inner_steps: int = 50,
    optimizer: str = "adam",
    lr: float | None = None,
    oracle: Any = None,
    estimator: str | None = None,
    throw: bool = True,
    progress: bool = False,
    state: State | None = None,
    blocking: BlockOptions | None = None,
    precision: PrecisionOptions | None = None,
    checkpointing: CheckpointOptions | None = None,
    **algorithm_kwargs: Any,
) -> SolveResult:
    """Run ``algorithm`` on ``game`` for ``steps`` iterations.

    Exact mode applies the algorithm's tabular step with exact win rates ``P(. > q) = P q``, batched over
    all contexts.  ``P`` is the only large array and each step reads it (one matvec per opponent policy), so
    with numpy a large batch runs *blocked* (:class:`BlockOptions`): the contexts are independent games, so a
    block of them does every iteration while its slice of ``P`` stays in cache before the next block starts;
    the iterates are those of the one-block loop.  Sampled mode (``mode="sampled"``) replaces exact win
    rates by preference queries to a stochastic oracle (Bernoulli outcomes drawn from ``P`` by default) and
    the exact step by ``inner_steps`` optimiser steps on the algorithm's torch loss over a softmax table: the
    same loss the LLM trainer uses.

    Args:
        game: the preference game (``(n, n)`` or ``(C, n, n)``).
        algorithm: a registered name (``"nash_md"``, ``"egpo"``, ...) or an :class:`~nashalign.algorithms.Algorithm`.
        eta: step size (float or schedule ``t -> eta_t``) in SPEC.md's step-size form; required with a name.
        tau: KL strength ``tau >= 0`` (default 0 with a name).
        steps: iterations ``T``.
        init: initial policy (probabilities; default ``mu``).
        mode: ``"exact"`` or ``"sampled"``.
        ref: reference policy ``mu`` (default: the game's).
        target: ``"auto"`` (the regularised equilibrium from cvxpy when ``tau >= 1e-6`` and the game is small;
            for the prox-point rules the one of their ``target_tau``: none for mpo/comal, ``pi*_beta`` for
            nash_prox), ``None``, or a policy to measure ``KL(target || pi_t)`` against.
        tol: stop early once the monitored exploitability (regularised when ``tau > 0``) is below ``tol``.
        record_every: record the history every this many steps (default ``max(1, steps // 200)``).
        seed: seed of the sampled mode.
        backend: ``"numpy"`` (float64) or ``"torch"`` (float64 on CPU by default; ``dtype``/``device`` to change).
        device: torch device.
        batch: sampled mode (see :mod:`nashalign.sampled`).
        inner_steps: sampled mode (see :mod:`nashalign.sampled`).
        optimizer: sampled mode (see :mod:`nashalign.sampled`).
        lr: sampled mode (see :mod:`nashalign.sampled`).
        oracle: sampled mode (see :mod:`nashalign.sampled`).
        estimator: sampled mode (see :mod:`nashalign.sampled`).
        throw: raise on non-finite iterates (default); ``False`` returns ``status="diverged"`` instead.
        progress: show a progress bar.
        state: continue from this algorithm state (e.g. ``previous_result.state``).
        blocking: :class:`BlockOptions` (``context_block``; the keyword ``context_block=`` still works).  Blocked
            runs give the same iterates and history (means over all contexts; ``time`` sums the blocks' times
            to each recorded step), cannot honour ``tol``, checkpoints, ``progress``, ``state`` or sampled mode
            (``"auto"`` then runs one block, an int raises) and rerun as one block if an iterate turns NaN.
        precision: :class:`PrecisionOptions` (``dtype``, ``p_dtype``; the keywords ``dtype=``, ``p_dtype=``
            still work).  ``p_dtype=np.float32`` (``torch.float32``) runs exact mode in mixed precision, the
            products ``P pi`` in float32 and everything else in ``dtype``; see :meth:`PreferenceGame.to`.
        checkpointing: :class:`CheckpointOptions` (``path``, ``every``; the keywords ``checkpoint=``,
            ``checkpoint_every=`` still work).
        **algorithm_kwargs: further hyperparameters for a named algorithm (e.g. ``mixture=0.5``).

    Returns:
        :class:`~nashalign.result.SolveResult` with ``last``, ``average``, ``history``, ``settings``, ``status``.

    Raises:
        ValueError: unknown algorithm, bad hyperparameters (``tau <= 0`` for a regularised rule, ...), bad
            shapes, or non-finite iterates with ``throw=True``.
    """
    if not isinstance(game, PreferenceGame):
        raise TypeError(f"game must be a PreferenceGame, got {type(game).__name__}; wrap a matrix with PreferenceGame(P).")
    given = {"blocking": blocking, "precision": precision, "checkpointing": checkpointing}
    opts = _options(given, algorithm_kwargs)
    alg = _build_algorithm(algorithm, eta, tau, algorithm_kwargs)
    steps, record_every, ckpt_every, seed = _check_run_args(
        steps, mode, tol, record_every, opts["checkpointing"].every, seed, oracle, backend, opts["precision"].p_dtype
    )
    g = game.to(backend, device=device, dtype=opts["precision"].dtype, p_dtype=opts["precision"].p_dtype)
    if state is not None:
        _check_state(state, g)
    logmu = g.log_ref if ref is None else _xp.log(g.policy(ref, "ref"))
    logp0 = logmu if init is None else _xp.log(g.policy(init, "init"))
    tgt = _target_logp(g, target, float(getattr(alg, "target_tau", alg.tau)), logmu)  # prox rules: their own target
    settings = {
        "algorithm": alg.name or type(alg).__name__, "hyperparameters": alg.hyperparameters(), "steps": steps,
        "num_contexts": g.num_contexts, "num_responses": g.num_responses, "backend": backend,
        "device": str(device) if device is not None else None, "dtype": str(g.ref.dtype), "p_dtype": str(g.P.dtype),
        "mode": mode, "seed": seed, "record_every": record_every,
    }
    ckpt = Path(opts["checkpointing"].path) if opts["checkpointing"].path is not None else None
    block = _resolve_block(
        opts["blocking"].context_block, alg, g.P, mode=mode, tol=tol, checkpoint=ckpt, state=state, progress=progress
    )
    settings["context_block"] = block
    runner = None
    if mode == "sampled":
        from nashalign.sampled import SampledRunner

        runner = SampledRunner(
            g, alg, oracle=oracle, batch=batch, inner_steps=inner_steps, optimizer=optimizer, lr=lr,
            estimator=estimator, seed=seed,
        )
        settings.update(batch=batch, inner_steps=inner_steps, optimizer=optimizer, lr=runner.lr, estimator=runner.estimator)
    loop = _Loop(
        alg, settings, record_every=record_every, runner=runner, progress=progress, ckpt=ckpt, ckpt_every=ckpt_every
    )
    return loop.solve(g, logp0, logmu, tgt, steps=steps, tol=tol, throw=throw, state=state, block=block)


def _check_run_args(
    steps: Any, mode: Any, tol: Any, record_every: Any, checkpoint_every: Any, seed: Any, oracle: Any, backend: Any,
    p_dtype: Any,
) -> tuple[int, int, int | None, int | None]:
    """The scalar arguments of :func:`solve`, checked: ``(steps, record_every, checkpoint_every, seed)``."""
    steps = check_int(steps, "steps", 0, "steps is the number of iterations T.")
    if not isinstance(mode, str) or mode not in ("exact", "sampled"):
        raise ValueError(f"mode must be 'exact' or 'sampled', got {mode!r}.")
    if tol is not None:
        check_positive(tol, "tol")
    record_every = max(1, steps // 200) if record_every is None else check_int(record_every, "record_every", 1)
    if checkpoint_every is not None:
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 0)
    if seed is not None:
        seed = check_seed(seed)
    if mode == "sampled":
        from nashalign.sampled import check_oracle_callable

        check_oracle_callable(oracle)
    if not isinstance(backend, str) or backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
    if p_dtype is not None and mode != "exact":
        raise ValueError("p_dtype (mixed precision) is for mode='exact'; the sampled mode keeps P in dtype.")
    return steps, record_every, checkpoint_every, seed


class _Monitor:
    """Decides the status of a run, in one place, from what the loop reports: the monitored exploitability
    ``m`` of each record (regularised when ``tau > 0``), a NaN iterate, a sampled collapse.

    With ``tau > 0`` the run has ``"diverged"`` at the first record after the first whose ``m`` exceeds
    ``max(2 m_0, m_0 + 1e-3)``; ``"converged"`` once ``m < tol`` (and no drift before); else
    ``"collapsed"`` (sampled), :func:`_stall_check` or ``"ok"``.
    """

    def __init__(self, alg: Algorithm, name: str, steps: int, tol: float | None, throw: bool) -> None:
        self.alg, self.name, self.tol, self.throw, self.tau = alg, name, tol, throw, float(alg.tau)
        self.message = f"ran {steps} steps"
        self.m0: float | None = None
        self.drift: tuple[int, float] | None = None
        self.converged: tuple[int, float] | None = None
        self.nan: tuple[int, str] | None = None
        self.collapsed: tuple[int, str] | None = None  # (step, why) of the first collapse of a sampled run

    def monitored(self, row: dict[str, float]) -> float:
        return row["reg_expl_last"] if self.tau > 0 else row["expl_last"]

    def on_record(self, m: float, t: int) -> bool:
        """Takes the record ``m`` at step ``t``; True when the run should stop (``tol`` reached)."""
        if self.m0 is None:
            self.m0 = m
            return False
        if self.tau > 0 and self.drift is None and m > max(2.0 * self.m0, self.m0 + 1e-3):
            self.drift = (t, m)
        if self.tol is not None and m < self.tol and self.drift is None:
            self.converged = (t, m)
            return True
        return False

    def on_nan(self, st: State) -> None:
        bad = np.argwhere(np.isnan(_xp.to_numpy(st.logp)))[0].tolist()
        msg = f"{self.name} produced NaN at step {st.t} (context {bad[0]}); reduce eta (now {self.alg.eta}) or check the game."
        if self.throw:
            raise ValueError(msg)
        self.nan = (st.t, msg)

    def status(self, history: History, runner: Any) -> tuple[str, int | None, str]:
        if self.nan is not None:
            return "diverged", self.nan[0], self.nan[1]
        if self.drift is not None:
            t, m = self.drift
            return "diverged", t, _drift_message(m, t, float(self.m0), self.alg.eta, self.tau)
        if self.converged is not None:
            t, m = self.converged
            return "converged", None, f"monitored exploitability {m:.3g} < tol {self.tol:g} at step {t}"
        if self.collapsed is not None:
            still = "and was still collapsed at the end" if runner.silent_iterations >= COLLAPSE_PATIENCE else "(it recovered later)"
            return "collapsed", self.collapsed[0], f"{self.collapsed[1]} The run went on {still}."
        if self.tau > 0:
            status, message = _stall_check(history, self.message)
            return status, None, message
        return "ok", None, self.message


class _Recorder:
    """The history rows.  One block: each row holds the means over the contexts.  Several blocks: row ``k`` of
    every block is the same step, so the per-context values are summed over the blocks and :meth:`merge` divides
    by ``C`` (means over all contexts, up to summation order); ``time`` sums the blocks' times to that step."""

    def __init__(self, num_contexts: int, blocked: bool) -> None:
        self.history, self.C, self.blocked, self.sums = History(), num_contexts, blocked, []

    def add(self, k: int, step: int, queries: int, elapsed: float, vals: dict[str, Any]) -> dict[str, float]:
        if not self.blocked:
            row: dict[str, float] = {"step": step, "queries": queries, "time": elapsed}
            row.update({key: float(_xp.to_numpy(v).mean()) for key, v in vals.items()})
            self.history.append(**row)
            return row
        if k == len(self.sums):
            self.sums.append({"step": step, "queries": 0, "time": 0.0})
        row = self.sums[k]
        row["time"] += elapsed
        for key, v in vals.items():
            row[key] = row.get(key, 0.0) + float(_xp.to_numpy(v).sum())
        return row

    def merge(self) -> History:
        for row in self.sums:
            self.history.append(**{key: v / self.C if key not in ("step", "queries", "time") else v for key, v in row.items()})
        return self.history


class _Loop:
    """The one loop of :func:`solve`: each block of contexts (a single block is the unblocked run) goes from its
    start to the last step with the hooks of every iteration (progress, collapse check), of every record
    (NaN check, history row, stop) and of every ``checkpoint_every`` steps; :class:`_Monitor` decides the status."""

    def __init__(
        self, alg: Algorithm, settings: dict[str, Any], *, record_every: int, runner: Any, progress: bool,
        ckpt: Path | None, ckpt_every: int | None,
    ) -> None:
        self.alg, self.settings, self.record_every, self.runner = alg, settings, record_every, runner
        self.progress, self.ckpt, self.ckpt_every, self.tau = progress, ckpt, ckpt_every, float(alg.tau)
        self.queries = 0

    def solve(
        self, g: PreferenceGame, logp0: Any, logmu: Any, tgt: Any, *, steps: int, tol: float | None, throw: bool,
        state: State | None, block: int | None,
    ) -> SolveResult:
        self.monitor = _Monitor(self.alg, self.settings["algorithm"], steps, tol, throw)
        out = self._blocks(g, logp0, logmu, tgt, steps, block) if block is not None else None
        if out is None:  # one block, or an iterate turned NaN in a block: the one-block loop reports it
            self.settings["context_block"] = None
            self.monitor = _Monitor(self.alg, self.settings["algorithm"], steps, tol, throw)
            out = self._one_block(g, logp0, logmu, tgt, steps, state)
        st, avg_sum, base_t, history = out
        status, diverged_at, message = self.monitor.status(history, self.runner)
        if self.ckpt is not None:
            _save_checkpoint(self.ckpt, st, avg_sum, history, self.queries)
        last = g.unbatch(_xp.exp(st.logp))
        average = g.unbatch(avg_sum / (st.t - base_t)) if st.t > base_t else last
        return SolveResult(last, average, history, self.settings, status, diverged_at, message, st)

    def _one_block(
        self, g: PreferenceGame, logp0: Any, logmu: Any, tgt: Any, steps: int, state: State | None
    ) -> tuple[State, Any, int, History]:
        self.rec = _Recorder(g.num_contexts, blocked=False)
        st = self.alg.init(logp0, logmu) if state is None else state
        avg_sum = _xp.zeros_like(logp0)
        base_t = st.t  # averaging and the step budget count from here
        if self.ckpt is not None and self.ckpt.exists() and state is None:
            st, avg_sum, self.rec.history, self.queries = _load_checkpoint(self.ckpt, g.ref)
            if self.runner is not None:
                self.runner.queries = self.queries
        if self.rec.history.rows:
            self.monitor.on_record(self.monitor.monitored(self.rec.history.rows[0]), 0)
        out = self._run_block(g.P, tgt, st, avg_sum, base_t, base_t + steps, fresh=not self.rec.history.rows)
        assert out is not None  # only a blocked run gives up on NaN
        return out[0], out[1], base_t, self.rec.history

    def _blocks(
        self, g: PreferenceGame, logp0: Any, logmu: Any, tgt: Any, steps: int, block: int
    ) -> tuple[State, Any, int, History] | None:
        """Contexts ``[c0, c0 + block)`` do all ``steps`` iterations while their slice of ``P`` (the only large
        array) stays in cache, then the next block starts.  Contexts are independent games and every registered
        step acts on each context separately, so the iterates equal the one-block loop's.  None on a NaN."""
        C = g.num_contexts
        self.rec = _Recorder(C, blocked=True)
        states, avgs = [], []
        for c0 in range(0, C, block):
            sl = slice(c0, min(c0 + block, C))
            st = self.alg.init(logp0[sl], logmu[sl])
            out = self._run_block(g.P[sl], None if tgt is None else tgt[sl], st, _xp.zeros_like(st.logp), 0, steps, fresh=True)
            if out is None:
                return None
            states.append(out[0])
            avgs.append(out[1])
        history = self.rec.merge()
        for row in history.rows:
            self.monitor.on_record(self.monitor.monitored(row), int(row["step"]))
        return _concat_states(states), _xp.concat(avgs), 0, history

    def _run_block(
        self, P: Any, tgt: Any, st: State, avg_sum: Any, base_t: int, end_t: int, *, fresh: bool
    ) -> tuple[State, Any] | None:
        """Iterations ``st.t -> end_t`` on one block of contexts; None when a blocked run meets a NaN."""
        blocked = self.rec.blocked
        win_rates = _WinRates(P)
        self.t0, self.rec_time, k = time.perf_counter(), 0.0, 0
        if fresh:
            if blocked and not _xp.no_nan(st.logp):
                return None
            self._record(0, P, win_rates, st, avg_sum, st.t - base_t, tgt)
            k = 1
        bar = self._bar(st.t - base_t) if self.progress else None
        while st.t < end_t:
            st = self._iterate(st, win_rates)
            avg_sum = avg_sum + _xp.exp(st.logp)
            if bar is not None:
                bar.update(1)
            if self.runner is not None and self.monitor.collapsed is None:
                self.monitor.collapsed = _collapse_message(self.runner, win_rates, st, self.alg)
            if st.t % self.record_every == 0 or st.t >= end_t:
                if not _xp.no_nan(st.logp):
                    if blocked:
                        return None
                    self.monitor.on_nan(st)
                    break
                if self._record(k, P, win_rates, st, avg_sum, st.t - base_t, tgt, bar):
                    break
                k += 1
            if self.ckpt is not None and self.ckpt_every and st.t % int(self.ckpt_every) == 0:
                _save_checkpoint(self.ckpt, st, avg_sum, self.rec.history, self.queries)
        if bar is not None:
            bar.close()
        return st, avg_sum

    def _iterate(self, st: State, win_rates: _WinRates) -> State:
        if self.runner is None:
            return _exact_iteration(self.alg, st, win_rates)
        st = self.runner.iterate(st)
        self.queries = self.runner.queries
        return st

    def _bar(self, initial: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=int(self.settings["steps"]), initial=initial, desc=self.settings["algorithm"])

    def _record(
        self, k: int, P: Any, win_rates: _WinRates, st: State, avg_sum: Any, n_done: int, tgt: Any, bar: Any = None
    ) -> bool:
        """Appends the record of ``st`` (row ``k`` of this block); True when the run should stop.  ``P pi_t`` is
        read once: the win rates serve both exploitabilities and the next exact step."""
        r0 = time.perf_counter()
        vals = _metrics(P, win_rates, st, avg_sum, n_done, tgt, self.tau)
        row = self.rec.add(k, st.t, self.queries, r0 - self.t0 - self.rec_time, vals)
        self.rec_time += time.perf_counter() - r0
        if self.rec.blocked:
            return False
        m = self.monitor.monitored(row)
        if bar is not None:
            bar.set_postfix(expl=f"{m:.3g}")
        return self.monitor.on_record(m, st.t)


def _concat_states(states: list[State]) -> State:
    """One state of all contexts from the blocks' states (memory arrays with a context axis concatenated)."""
    first = states[0]
    memory = {
        key: _xp.concat([s.memory[key] for s in states])
        if getattr(val, "ndim", 0) >= 1 and val.shape[0] == first.logp.shape[0] else val
        for key, val in first.memory.items()
    }
    return State(first.t, _xp.concat([s.logp for s in states]), _xp.concat([s.logmu for s in states]), memory)

def _collapse_message(runner: Any, win_rates: _WinRates, st: State, alg: Algorithm) -> tuple[int, str] | None:
    """``(step, why)`` when the sampled run has collapsed, else None: for :data:`COLLAPSE_PATIENCE` iterations in a
    row every sampled row held one response repeated (the policy sits on one response per context, so every
    comparison is a tie, the estimated signal is constant and the loss no longer moves the policy), and that
    response is not an equilibrium (mean exploitability above :data:`COLLAPSE_EXPL`; a Condorcet winner is fine)."""
    if runner.silent_iterations < COLLAPSE_PATIENCE:
        return None
    expl = float(_xp.to_numpy(expl_from_win_rates(win_rates(st.logp))).mean())
    if expl <= COLLAPSE_EXPL:
        return None
    return st.t, (
        f"sampled self-play collapsed at step {st.t}: for {runner.silent_iterations} iterations every sample of a "
        f"context was the same response, so no preference signal was left and the policy could not move "
        f"(exploitability {expl:.3g}). Lower eta (now {alg.eta}), use a decaying schedule or a larger batch, or "
        "add tau > 0 (docs/SPEC.md, 'Step sizes in sampled mode')."
    )


def _check_state(state: Any, g: PreferenceGame) -> None:
    """``state`` (to continue from) is a :class:`State` of this game's shape ``(C, n)``."""
    if not isinstance(state, State):
        raise TypeError(f"state must be a nashalign State (e.g. previous_result.state), got {type(state).__name__}.")
    want = (g.num_contexts, g.num_responses)
    if tuple(getattr(state.logp, "shape", ())) != want:
        raise ValueError(
            f"state.logp has shape {tuple(getattr(state.logp, 'shape', ()))}, but the game needs {want}: pass the state "
            "of a run on this game (previous_result.state)."
        )


def _stall_check(history: History, message: str) -> tuple[str, str]:
    """``"stalled"`` when the regularised exploitability of the last iterate made no progress over the last
    quarter of the records (its maximum there is above 90% of its maximum over the quarter before) while it
    is still above 1e-9.

    Linearly convergent rules shrink it by orders of magnitude per quarter of a long run; a limit cycle or
    a biased fixed point keeps it flat.
    """
    r = history["reg_expl_last"]
    if len(r) < 8:
        return "ok", message
    q = max(len(r) // 4, 2)
    last, before = r[-q:], r[-2 * q : -q]
    if last.max() > 1e-9 and last.max() > 0.9 * before.max():
        return "stalled", (
            f"the last iterate stopped approaching the regularised equilibrium: regularised exploitability "
            f"peaked at {before.max():.3g} then {last.max():.3g} over the last two quarters of the run (a limit cycle, or a biased fixed point "
            "such as Nash-MD's with a constant step); lower eta, or use EGPO/OMWU."
        )
    return "ok", message


def _save_checkpoint(path: Path, st: State, avg_sum: Any, history: History, queries: int) -> None:
    import json

    data = {**st.to_dict(), "avg_sum": _xp.to_numpy(avg_sum), "queries": np.asarray(queries)}
    data["history_json"] = np.asarray(json.dumps(history.as_dict()))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)


def _load_checkpoint(path: Path, like: Any) -> tuple[State, Any, History, int]:
    import json

    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    st = State.from_dict(d, like=like)
    avg = _xp.like(d["avg_sum"], like)
    hist = History.from_dict(json.loads(str(d["history_json"])))
    return st, avg, hist, int(d["queries"])
