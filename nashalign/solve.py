"""The driver: runs any algorithm on a preference game, exactly or from sampled preference feedback.

The driver owns everything around the update (DESIGN.md 4.4): the loop over iterations and phases,
the uniform average of the iterates, recording, divergence detection, progress and checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nashalign import _xp
from nashalign._validation import check_positive
from nashalign.algorithms import _blocks
from nashalign.algorithms.base import Algorithm, State
from nashalign.algorithms.registry import get_algorithm
from nashalign.game import PreferenceGame
from nashalign.metrics import expl_from_win_rates, kl_logp, reg_expl_from_win_rates
from nashalign.result import History, SolveResult

#: Above this many (context, response) cells, ``target="auto"`` does not call cvxpy.
AUTO_TARGET_MAX_CELLS = 20_000


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


def _target_logp(game: PreferenceGame, target: Any, tau: float, logmu: Any) -> Any:
    if target is None or (isinstance(target, str) and target == "none"):
        return None
    if isinstance(target, str):
        if target != "auto":
            raise ValueError(f"target must be 'auto', None or a policy array, got {target!r}.")
        if tau <= 0 or game.num_contexts * game.num_responses > AUTO_TARGET_MAX_CELLS:
            return None
        from nashalign.equilibrium import solve_regularized_nash

        ref = _xp.exp(logmu)
        tgt = solve_regularized_nash(game.to("numpy"), tau, ref=_xp.to_numpy(ref))
        return _xp.like(np.log(np.reshape(tgt, (game.num_contexts, game.num_responses))), game.P)
    pi = game.policy(target, "target")
    return _xp.log(pi)


def solve(
    game: PreferenceGame,
    algorithm: str | Algorithm,
    *,
    eta: Any = None,
    tau: float | None = None,
    steps: int = 1000,
    ref: Any = None,
    init: Any = None,
    backend: str = "numpy",
    device: Any = None,
    dtype: Any = None,
    record_every: int | None = None,
    seed: int | None = None,
    target: Any = "auto",
    tol: float | None = None,
    mode: str = "exact",
    batch: int = 64,
    inner_steps: int = 50,
    optimizer: str = "adam",
    lr: float | None = None,
    oracle: Any = None,
    estimator: str | None = None,
    throw: bool = True,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    state: State | None = None,
    **algorithm_kwargs: Any,
) -> SolveResult:
    """Run ``algorithm`` on ``game`` for ``steps`` iterations.

    Exact mode applies the algorithm's tabular step with exact win rates ``P(. > q) = P q``, batched over
    all contexts.  Sampled mode (``mode="sampled"``) replaces exact win rates by preference queries to a
    stochastic oracle (Bernoulli outcomes drawn from ``P`` by default) and the exact step by ``inner_steps``
    optimiser steps on the algorithm's torch loss over a softmax table: the same loss the LLM trainer uses.

    Args:
        game: the preference game (``(n, n)`` or ``(C, n, n)``).
        algorithm: a registered name (``"nash_md"``, ``"egpo"``, ...) or an :class:`~nashalign.algorithms.Algorithm`.
        eta: step size (float or schedule ``t -> eta_t``) in SPEC.md's step-size form; required with a name.
        tau: KL strength ``tau >= 0`` (default 0 with a name).
        steps: iterations ``T``.
        ref: reference policy ``mu`` (default: the game's).
        init: initial policy (probabilities; default ``mu``).
        backend: ``"numpy"`` (float64) or ``"torch"`` (float64 on CPU by default; ``dtype``/``device`` to change).
        record_every: record the history every this many steps (default ``max(1, steps // 200)``).
        seed: seed of the sampled mode.
        target: ``"auto"`` (the regularised equilibrium from cvxpy when ``tau > 0`` and the game is small),
            ``None``, or a policy to measure ``KL(target || pi_t)`` against.
        tol: stop early once the monitored exploitability (regularised when ``tau > 0``) is below ``tol``.
        mode: ``"exact"`` or ``"sampled"``.
        batch, inner_steps, optimizer, lr, oracle, estimator: sampled mode (see :mod:`nashalign.sampled`).
        throw: raise on non-finite iterates (default); ``False`` returns ``status="diverged"`` instead.
        progress: show a progress bar.
        checkpoint, checkpoint_every: save the run to this ``.npz`` file every so many steps and at the end;
            an existing file is resumed from (the same settings must be passed).
        state: continue from this algorithm state (e.g. ``previous_result.state``).
        **algorithm_kwargs: further hyperparameters for a named algorithm (e.g. ``mixture=0.5``).

    Returns:
        :class:`~nashalign.result.SolveResult` with ``last``, ``average``, ``history``, ``settings``, ``status``.

    Raises:
        ValueError: unknown algorithm, bad hyperparameters (``tau <= 0`` for a regularised rule, ...), bad
            shapes, or non-finite iterates with ``throw=True``.
    """
    if not isinstance(game, PreferenceGame):
        raise TypeError(f"game must be a PreferenceGame, got {type(game).__name__}; wrap a matrix with PreferenceGame(P).")
    alg = _build_algorithm(algorithm, eta, tau, algorithm_kwargs)
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    if mode not in ("exact", "sampled"):
        raise ValueError(f"mode must be 'exact' or 'sampled', got {mode!r}.")
    if tol is not None:
        check_positive(tol, "tol")
    record_every = max(1, steps // 200) if record_every is None else int(record_every)
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}.")

    if backend == "numpy":
        g = game.to("numpy", dtype=dtype)
    elif backend == "torch":
        g = game.to("torch", device=device, dtype=dtype)
    else:
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
    P = g.P
    logmu = g.log_ref if ref is None else _xp.log(g.policy(ref, "ref"))
    logp0 = logmu if init is None else _xp.log(g.policy(init, "init"))
    tau_f = float(alg.tau)
    tgt = _target_logp(g, target, tau_f, logmu)

    settings = {
        "algorithm": alg.name or type(alg).__name__,
        "hyperparameters": alg.hyperparameters(),
        "steps": steps,
        "num_contexts": g.num_contexts,
        "num_responses": g.num_responses,
        "backend": backend,
        "device": str(device) if device is not None else None,
        "dtype": str(P.dtype),
        "mode": mode,
        "seed": seed,
        "record_every": record_every,
    }
    if mode == "sampled":
        from nashalign.sampled import SampledRunner

        runner = SampledRunner(
            g, alg, oracle=oracle, batch=batch, inner_steps=inner_steps, optimizer=optimizer, lr=lr,
            estimator=estimator, seed=seed,
        )
        settings.update(batch=batch, inner_steps=inner_steps, optimizer=optimizer, lr=runner.lr, estimator=runner.estimator)
    else:
        runner = None

    history = History()
    st = alg.init(logp0, logmu) if state is None else state
    avg_sum = _xp.zeros_like(logp0)
    base_t = st.t  # averaging and the step budget count from here
    queries = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists() and state is None:
        st, avg_sum, history, queries = _load_checkpoint(ckpt, P)
        if runner is not None:
            runner.queries = queries
    t0 = time.perf_counter()
    rec_time = 0.0
    status, diverged_at, message = "ok", None, f"ran {steps} steps"
    m0: float | None = None
    win_rates = _WinRates(P)

    def record(s: State) -> float:
        nonlocal rec_time
        r0 = time.perf_counter()
        n_done = s.t - base_t
        row: dict[str, float] = {"step": s.t, "queries": queries, "time": r0 - t0 - rec_time}
        # P is read once per policy: the win rates serve both exploitabilities (and the next exact step).
        pi, w = _xp.exp(s.logp), win_rates(s.logp)
        row["expl_last"] = float(_xp.to_numpy(expl_from_win_rates(w)).mean())
        if n_done > 0:
            log_avg = _xp.log(avg_sum / n_done)
            pi_avg = _xp.exp(log_avg)
            w_avg = _xp.matvec(P, pi_avg)
        else:
            log_avg, pi_avg, w_avg = s.logp, pi, w
        row["expl_avg"] = float(_xp.to_numpy(expl_from_win_rates(w_avg)).mean())
        if tau_f > 0:
            row["reg_expl_last"] = float(_xp.to_numpy(reg_expl_from_win_rates(w, pi, s.logp, s.logmu, tau_f)).mean())
            row["reg_expl_avg"] = float(
                _xp.to_numpy(reg_expl_from_win_rates(w_avg, pi_avg, log_avg, s.logmu, tau_f)).mean()
            )
        if tgt is not None:
            row["kl_target_last"] = float(_xp.to_numpy(kl_logp(tgt, s.logp)).mean())
            row["kl_target_avg"] = float(_xp.to_numpy(kl_logp(tgt, log_avg)).mean())
        history.append(**row)
        rec_time += time.perf_counter() - r0
        return row["reg_expl_last"] if tau_f > 0 else row["expl_last"]

    if not history.rows:
        m0 = record(st)
    else:
        m0 = history.rows[0]["reg_expl_last" if tau_f > 0 else "expl_last"]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=st.t - base_t, desc=settings["algorithm"])
    end_t = base_t + steps
    while st.t < end_t:
        if runner is None:
            for phase in range(alg.phases):
                st = alg.update(st, win_rates.signal(alg.opponents(st, phase)), phase)
        else:
            st = runner.iterate(st)
            queries = runner.queries
        avg_sum = avg_sum + _xp.exp(st.logp)
        if bar is not None:
            bar.update(1)
        last_step = st.t >= end_t
        if st.t % record_every == 0 or last_step:
            if not _xp.no_nan(st.logp):
                bad = np.argwhere(np.isnan(_xp.to_numpy(st.logp)))[0].tolist()
                msg = (
                    f"{settings['algorithm']} produced NaN at step {st.t} (context {bad[0]}); "
                    f"reduce eta (now {alg.eta}) or check the game."
                )
                if throw:
                    raise ValueError(msg)
                status, diverged_at, message = "diverged", st.t, msg
                break
            m = record(st)
            if bar is not None:
                bar.set_postfix(expl=f"{m:.3g}")
            if tau_f > 0 and diverged_at is None and m > max(2.0 * m0, m0 + 1e-3):
                status, diverged_at = "diverged", st.t
                message = (
                    f"the last iterate moved away from the regularised equilibrium: regularised exploitability "
                    f"{m:.3g} at step {st.t} > {max(2.0 * m0, m0 + 1e-3):.3g} (start {m0:.3g}); eta={alg.eta} "
                    f"is likely above this rule's stability limit for tau={tau_f}."
                )
            if tol is not None and m < tol and status == "ok":
                status, message = "converged", f"monitored exploitability {m:.3g} < tol {tol:g} at step {st.t}"
                break
        if ckpt is not None and checkpoint_every and st.t % int(checkpoint_every) == 0:
            _save_checkpoint(ckpt, st, avg_sum, history, queries)
    if bar is not None:
        bar.close()
    if status == "ok" and tau_f > 0:
        status, message = _stall_check(history, message)
    if ckpt is not None:
        _save_checkpoint(ckpt, st, avg_sum, history, queries)
    last = g.unbatch(_xp.exp(st.logp))
    average = g.unbatch(avg_sum / (st.t - base_t)) if st.t > base_t else last
    return SolveResult(last, average, history, settings, status, diverged_at, message, st)


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
    st = State.from_dict(d, like=like[..., 0])
    avg = _xp.like(d["avg_sum"], like[..., 0])
    hist = History.from_dict(json.loads(str(d["history_json"])))
    return st, avg, hist, int(d["queries"])
