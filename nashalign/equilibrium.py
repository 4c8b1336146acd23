"""Exact equilibria of preference games: the tabular ground truth (SPEC.md section 1).

Two solvers, both batched over contexts and both verified after solving:

* :func:`solve_nash` -- the Nash equilibrium (minimax / von Neumann winner) of the unregularised game,
  a linear program (SPEC.md 1(a)), polished in float64 on the equilibrium's support.
* :func:`solve_regularized_nash` -- the KL-regularised equilibrium ``pi*_tau``, an exponential-cone
  program (SPEC.md 1(b)) polished to machine precision by Newton's method on the fixed-point equation
  ``pi = BR_tau(pi)`` (SPEC.md 1(d)), in log space.

Both default to Clarabel (shipped with every cvxpy >= 1.6) and accept any installed cvxpy solver by
name.  An answer that misses its accuracy target raises :class:`EquilibriumError` (or warns with
``throw=False``) with the numbers, so a test never silently compares against a wrong reference.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from nashalign import _validation as V
from nashalign import _xp
from nashalign.game import PreferenceGame
from nashalign.metrics import as_game, reg_expl_logp

__all__ = ["EquilibriumError", "EquilibriumInfo", "solve_nash", "solve_regularized_nash"]

#: Clarabel settings for the LP.  Its defaults (1e-8) leave exploitability around 1e-9; these reach
#: ~1e-12 before the support polish.  Clarabel may then report "optimal_inaccurate", which the polish
#: and the final check make harmless.
_CLARABEL_LP = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
#: Clarabel settings for the exponential-cone program; the Newton polish does the rest.
_CLARABEL_EXP = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "tol_ktratio": 1e-8}
#: Problems up to this many responses are compiled once as DPP problems and re-solved per context;
#: larger ones are built per context (a DPP parameter of n^2 entries costs too much memory there).
_DPP_MAX_N = 128
#: Candidate support thresholds tried by the LP polish.
_SUPPORT_THRESHOLDS = (1e-13, 1e-11, 1e-9, 1e-7, 1e-5)
#: Win-rate candidates: ``S = {y : (A pi)(y) >= -f * expl(pi)}`` for these ``f``.  At an approximate equilibrium
#: with exploitability ``eps`` the support's responses earn about the value and the others ``-gap``, so these
#: find the support from iterates far less accurate than the probability thresholds need.
_WINRATE_FACTORS = (2.0, 8.0, 32.0, 128.0)


def _skew(P: Any) -> np.ndarray:
    """``A = (P - P^T)/2`` in float64, ``(C, n, n)``: exactly skew, and ``(A pi)(y) = P(y > pi) - 1/2``."""
    P = np.asarray(_xp.to_numpy(P), dtype=np.float64)
    return 0.5 * (P - np.swapaxes(P, -1, -2))


def _expl_skew(A: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """Exploitability ``max_y (A pi)(y) = max_y P(y > pi) - 1/2`` per context, ``(C,)``."""
    return np.max(np.einsum("cij,cj->ci", A, pi), -1)


def _candidate_supports(A: np.ndarray, pi: np.ndarray) -> list[np.ndarray]:
    """Support guesses ``(C, n)`` for :func:`_support_polish`: by probability, then by win rate."""
    out = [pi > thr * pi.max(-1, keepdims=True) for thr in _SUPPORT_THRESHOLDS]
    w = np.einsum("cij,cj->ci", A, pi)  # (A pi)(y) = P(y > pi) - 1/2
    eps = np.maximum(w.max(-1, keepdims=True), 1e-15)
    out += [w >= -f * eps for f in _WINRATE_FACTORS]
    return out


#: Smallest ``tau`` :func:`solve_regularized_nash` accepts (:data:`nashalign._validation.TAU_FLOOR`): below it
#: ``(A/tau)^2`` overflows float64.  Reaching the 1e-12 accuracy target is another matter: it was measured to fail on
#: some random games below ``tau`` ~ 1e-6 (:class:`EquilibriumError` then says so).
TAU_FLOOR = V.TAU_FLOOR


class EquilibriumError(RuntimeError):
    """An equilibrium solve did not reach its accuracy target (the message carries the numbers)."""


@dataclass(frozen=True)
class EquilibriumInfo:
    """What happened in a solve (``return_info=True``).  Arrays are per context, ``(C,)``.

    Attributes:
        solver: the cvxpy solver used.
        status: cvxpy status per context (``"optimal"``, ``"optimal_inaccurate"``, ``"solver_error"``,
            or ``"trivial"`` when there was nothing to solve).
        value: optimal value of the program per context; 1/2 for both programs at the exact answer
            (the value of a symmetric constant-sum game; SPEC.md 1(a)/1(b)).
        exploitability: ``max_y P(y > pi) - 1/2`` of the returned policy (SPEC.md 1(c)).
        reg_exploitability: ``tau KL(pi || BR_tau(pi)) = DG_tau(pi)/2`` (regularised solve only).
        residual: fixed-point residual ``max_y |log pi(y) - log BR_tau(pi)(y)|`` over the support of
            ``mu`` (regularised solve only).
        solver_iterations: interior-point iterations per context (-1 when unknown).
        polish_iterations: Newton iterations of the float64 polish (regularised), or the number of
            contexts the support polish improved (LP).
        solve_time: seconds in cvxpy (compile and solve).
        polish_time: seconds in the float64 polish and checks.
    """

    solver: str
    status: tuple[str, ...]
    value: np.ndarray
    exploitability: np.ndarray
    reg_exploitability: np.ndarray | None
    residual: np.ndarray | None
    solver_iterations: np.ndarray
    polish_iterations: int
    solve_time: float
    polish_time: float


# ----------------------------------------------------------------------------------------- input checks
def _as_game(game: Any) -> PreferenceGame:
    return as_game(game)


def _solver_name(solver: str | None) -> str:
    import cvxpy as cp

    if solver is None:
        return "CLARABEL"
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a cvxpy solver name such as 'CLARABEL' or 'HIGHS', got {solver!r}.")
    name = solver.upper()
    installed = cp.installed_solvers()
    if name not in installed:
        raise ValueError(f"solver {solver!r} is not installed with cvxpy; installed solvers: {installed}.")
    return name


def _check_flags(**flags: Any) -> None:
    for nm, flag in flags.items():
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{nm} must be True or False, got {flag!r}.")


def _report(msg: str, throw: bool) -> None:
    if throw:
        raise EquilibriumError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _solve_quietly(problem: Any, pi: Any, solver: str, opts: dict[str, Any]) -> tuple[np.ndarray | None, str, int]:
    """Solve a cvxpy problem for its variable ``pi``; never raise or warn on solver trouble.

    Returns ``(pi as float64, or None when the solver gave no finite answer, status, iterations)``.
    """
    import cvxpy as cp

    try:
        with warnings.catch_warnings():
            # cvxpy warns "Solution may be inaccurate" for OPTIMAL_INACCURATE; we record the status
            # instead and let the float64 polish and the final check decide.
            warnings.simplefilter("ignore")
            problem.solve(solver=solver, **opts)
    except cp.error.SolverError:
        status, its = "solver_error", -1
    else:
        stats = problem.solver_stats
        its = stats.num_iters if stats is not None and stats.num_iters is not None else -1
        status = str(problem.status)
    if pi.value is None or not np.all(np.isfinite(pi.value)):
        return None, status, int(its)
    return np.array(pi.value, dtype=np.float64), status, int(its)


def _opts(solver: str, defaults: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    opts = dict(defaults) if solver == "CLARABEL" else {}
    if user:
        opts.update(user)
    return opts


def _result(
    game: PreferenceGame,
    pi: np.ndarray,
    return_info: bool,
    solver: str,
    status: list[str],
    value: np.ndarray,
    expl: np.ndarray,
    iters: np.ndarray,
    npol: int,
    times: tuple[float, float, float],
    reg: np.ndarray | None = None,
    res: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, EquilibriumInfo]:
    """What a solver returns: ``pi`` (C, n) in the game's shape, and with ``return_info`` its
    :class:`EquilibriumInfo`; ``times`` are the clock readings before the cvxpy solves, after them and after
    the polish and checks."""
    out = game.unbatch(pi)
    if not return_info:
        return out
    t0, t1, t2 = times
    info = EquilibriumInfo(
        solver=solver,
        status=tuple(status),
        value=value,
        exploitability=expl,
        reg_exploitability=reg,
        residual=res,
        solver_iterations=iters,
        polish_iterations=npol,
        solve_time=t1 - t0,
        polish_time=t2 - t1,
    )
    return out, info


# ----------------------------------------------------------------------------------------- the LP
def _lp_program(A: Any, n: int) -> tuple[Any, Any, Any]:
    """``max t  s.t.  A pi + t <= 0, 1^T pi = 1, pi >= 0`` for ``A`` (n, n), an array or a cvxpy parameter."""
    import cvxpy as cp

    pi = cp.Variable(n, nonneg=True)
    t = cp.Variable()
    prob = cp.Problem(cp.Maximize(t), [A @ pi + t <= 0, cp.sum(pi) == 1])
    return prob, pi, t


@functools.lru_cache(maxsize=16)
def _lp_problem(n: int) -> tuple[Any, Any, Any, Any]:
    """The DPP form of :func:`_lp_program`, with parameter ``A`` (n, n)."""
    import cvxpy as cp

    A = cp.Parameter((n, n))
    prob, pi, t = _lp_program(A, n)
    return prob, A, pi, t


def _lp_solve_one(A: np.ndarray, solver: str, opts: dict[str, Any]) -> tuple[np.ndarray | None, str, int, float]:
    n = A.shape[0]
    if n <= _DPP_MAX_N:
        prob, Ap, pi, t = _lp_problem(n)
        Ap.value = A
    else:
        prob, pi, t = _lp_program(A, n)
    x, status, its = _solve_quietly(prob, pi, solver, opts)
    return x, status, its, np.nan if x is None else float(t.value) + 0.5


def _simplex_clean(x: np.ndarray) -> np.ndarray:
    """Clip tiny negatives and renormalise rows onto the simplex."""
    x = np.clip(x, 0.0, None)
    return x / x.sum(-1, keepdims=True)


def _support_polish(A: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """Re-solve the equalising system on candidate supports in float64; keep the least exploitable.

    For support ``S`` the NE satisfies ``(A pi)(y) = v`` for ``y in S`` (all best responses earn the
    value, here ``v = 0``), ``pi(y) = 0`` off ``S`` and ``1^T pi = 1``: one square linear system of size
    ``n + 1`` per context, solved batched.  The candidate supports come from the probabilities and the win
    rates of ``pi`` (:func:`_candidate_supports`); candidates that come out infeasible (negative mass) or
    singular are discarded, and a context stops trying once a candidate is exact to rounding
    (exploitability <= 4e-16).
    """
    C, n = pi.shape
    best = pi.copy()
    best_expl = _expl_skew(A, pi)
    solved = np.zeros(C, dtype=bool)  # an exact candidate (exploitability at rounding level) was found
    eye = np.eye(n)
    seen: set[bytes] = set()
    for S_all in _candidate_supports(A, pi):
        act = np.flatnonzero(~solved)  # contexts still looking: a solved one keeps its answer
        if not act.size:
            break
        S = S_all[act]
        if S.tobytes() + act.tobytes() in seen:
            continue
        seen.add(S.tobytes() + act.tobytes())
        Aa, m = A[act], act.size
        M = np.zeros((m, n + 1, n + 1))
        M[:, :n, :n] = np.where(S[:, :, None], Aa, eye)  # rows in S: (A pi)(y) - v = 0; else pi(y) = 0
        M[:, :n, n] = np.where(S, -1.0, 0.0)
        M[:, n, :n] = 1.0
        rhs = np.zeros((m, n + 1, 1))
        rhs[:, n] = 1.0
        x = np.full((m, n), np.nan)
        ok = np.ones(m, dtype=bool)
        with np.errstate(all="ignore"):
            try:
                x = np.linalg.solve(M, rhs)[:, :n, 0]
            except np.linalg.LinAlgError:  # some context's support guess is singular: go one by one
                for c in range(m):
                    try:
                        x[c] = np.linalg.solve(M[c], rhs[c])[:n, 0]
                    except np.linalg.LinAlgError:
                        ok[c] = False
        ok &= np.all(np.isfinite(x), -1) & (np.nan_to_num(x, nan=-1.0).min(-1) > -1e-12)
        if not ok.any():
            continue
        b = best[act]
        cand = _simplex_clean(np.where(ok[:, None], x, b))
        cand = _simplex_clean(np.where(cand < 1e-14, 0.0, cand))  # rounding-level mass is no support
        expl = _expl_skew(Aa, cand)
        # strictly less exploitable, or as good (to rounding) with a smaller support
        tie = (expl <= best_expl[act] + 4e-16) & ((cand > 0).sum(-1) < (b > 0).sum(-1))
        better = ok & ((expl < best_expl[act]) | tie)
        best[act[better]] = cand[better]
        best_expl[act[better]] = expl[better]
        solved[act[better & (expl <= 4e-16)]] = True
    return best


def solve_nash(
    game: PreferenceGame | Any,
    solver: str | None = None,
    check: bool = True,
    *,
    tol: float = 1e-7,
    throw: bool = True,
    polish: bool = True,
    solver_options: dict[str, Any] | None = None,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, EquilibriumInfo]:
    """Nash equilibrium (minimax winner) of each context's preference game, by linear programming.

    SPEC.md 1(a): ``pi*`` is a Nash equilibrium iff no response beats it in expectation,
    ``P(y > pi*) = (P pi*)(y) <= 1/2`` for every ``y``.  It solves the LP

        maximize v  s.t.  P^T pi >= v 1,  1^T pi = 1,  pi >= 0,

    whose optimal value is exactly ``v* = 1/2`` (a symmetric constant-sum game).  Internally the
    equivalent, better-conditioned form ``max t  s.t.  A pi + t 1 <= 0`` with ``A = P - 1/2`` is solved
    (``P^T pi = 1/2 - A pi`` on the simplex, so ``v = 1/2 + t``).  The answer is then cleaned (tiny
    negatives clipped, renormalised) and, with ``polish=True``, refined in float64 by re-solving the
    equalising system ``(A pi)_S = 0, pi_{not S} = 0, 1^T pi = 1`` on the detected support ``S``;
    finally it is checked: ``expl(pi) = max_y P(y > pi) - 1/2 < tol``.

    The equilibrium is unique for generic ``P`` (Laffond, Laslier and Le Breton, 1997) and pure when a
    Condorcet winner exists; with ties (e.g. :func:`nashalign.games.cyclic` for even ``n``) the solver
    returns one of the equilibria.

    Args:
        game: a :class:`~nashalign.game.PreferenceGame` (numpy or torch), or a preference matrix.
        solver: cvxpy solver name; default ``"CLARABEL"`` with tight tolerances.  ``"HIGHS"`` (simplex,
            cvxpy >= 1.8) returns vertex solutions.
        check: verify ``exploitability < tol`` after solving.
        tol: accuracy target on the exploitability (default 1e-7; typically reached: ~1e-15).
        throw: when the check fails, raise :class:`EquilibriumError` (default) or only warn.
        polish: refine on the support in float64.
        solver_options: extra keyword arguments for ``cvxpy.Problem.solve`` (override the defaults).
        return_info: also return an :class:`EquilibriumInfo`.

    Returns:
        ``pi*`` as numpy float64, ``(n,)`` for a single-context game, else ``(C, n)``; with
        ``return_info`` a pair ``(pi*, info)``.

    Raises:
        TypeError: ``game`` is not a game, or a flag is not a bool.
        ValueError: unknown or uninstalled solver, or ``tol`` not positive.
        EquilibriumError: the check failed and ``throw=True``.

    Examples:
        >>> from nashalign import games
        >>> from nashalign.equilibrium import solve_nash
        >>> solve_nash(games.rock_paper_scissors()).round(6).tolist()
        [0.333333, 0.333333, 0.333333]
        >>> solve_nash(games.bradley_terry([0.0, 2.0, 1.0])).round(6).tolist()   # the best response wins
        [0.0, 1.0, 0.0]
    """
    game = _as_game(game)
    name = _solver_name(solver)
    _check_flags(check=check, throw=throw, polish=polish, return_info=return_info)
    tol = V.check_positive(tol, "tol")
    opts = _opts(name, _CLARABEL_LP, solver_options)

    P = np.asarray(_xp.to_numpy(game.P), dtype=np.float64)  # (C, n, n)
    A = _skew(P)  # (C, n, n)
    C, n = game.num_contexts, game.num_responses

    t0 = time.perf_counter()
    pi = np.full((C, n), 1.0 / n)
    value = np.full(C, 0.5)
    status: list[str] = []
    iters = np.full(C, -1)
    if n == 1:
        status = ["trivial"] * C
    else:
        for c in range(C):  # one compiled problem, re-solved per context
            x, st, its, val = _lp_solve_one(A[c], name, opts)
            status.append(st)
            iters[c] = its
            value[c] = val
            if x is not None:
                pi[c] = x
    t1 = time.perf_counter()

    pi = _simplex_clean(pi)
    expl0 = _expl_skew(A, pi)
    npol = 0
    if polish and n > 1:
        pi = _support_polish(A, pi)
    expl = np.max(np.einsum("cij,cj->ci", P, pi), -1) - 0.5  # (C,)
    npol = int(np.sum(expl < expl0 - 1e-16))
    t2 = time.perf_counter()

    if check and not np.all(expl < tol):
        bad = np.flatnonzero(~(expl < tol))
        _report(
            f"solve_nash did not reach exploitability < {tol:g}: contexts {bad[:5].tolist()} have "
            f"exploitability {expl[bad[:5]].tolist()} (solver {name}, status "
            f"{[status[i] for i in bad[:5]]}). Try solver='HIGHS', or loosen tol / pass throw=False.",
            throw,
        )
    return _result(game, pi, return_info, name, status, value, expl, iters, npol, (t0, t1, t2))


# ----------------------------------------------------------------------------------------- regularised
def _exp_program(B: Any, mu: Any, lmu: Any, n: int) -> tuple[Any, Any]:
    """``min sum rel_entr(pi, mu) + LSE(log mu + B pi)`` over the simplex; ``B``, ``mu``, ``lmu = log mu``
    are arrays or cvxpy parameters."""
    import cvxpy as cp

    pi = cp.Variable(n, nonneg=True)
    obj = cp.sum(cp.rel_entr(pi, mu)) + cp.log_sum_exp(lmu + B @ pi)
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(pi) == 1])
    return prob, pi


@functools.lru_cache(maxsize=16)
def _exp_problem(n: int) -> tuple[Any, Any, Any, Any, Any]:
    """The DPP form of :func:`_exp_program`, with parameters ``B = A/tau``, ``mu`` and ``log mu``."""
    import cvxpy as cp

    B = cp.Parameter((n, n))
    mu = cp.Parameter(n, nonneg=True)
    lmu = cp.Parameter(n)
    prob, pi = _exp_program(B, mu, lmu, n)
    return prob, B, mu, lmu, pi


def _exp_solve_one(
    B: np.ndarray, mu: np.ndarray, solver: str, opts: dict[str, Any]
) -> tuple[np.ndarray | None, str, int, float]:
    n = B.shape[0]
    lmu = np.log(mu)
    if n <= _DPP_MAX_N:
        prob, Bp, mup, lmup, pi = _exp_problem(n)
        Bp.value, mup.value, lmup.value = B, mu, lmu
    else:
        prob, pi = _exp_program(B, mu, lmu, n)
    x, status, its = _solve_quietly(prob, pi, solver, opts)
    return x, status, its, np.nan if x is None else float(prob.value)


def _fp_residual(P: np.ndarray, z: np.ndarray, lmu: np.ndarray, tau: float, on: np.ndarray) -> np.ndarray:
    """``r = z - log BR_tau(exp z)`` on the support of mu (0 elsewhere); ``(C, n)``."""
    br = _xp.log_normalize(lmu + np.einsum("cij,cj->ci", P, np.exp(z)) / tau)  # (C, n)
    with np.errstate(invalid="ignore"):
        return np.where(on, z - br, 0.0)


def _newton_polish(
    P: np.ndarray, z: np.ndarray, lmu: np.ndarray, tau: float, on: np.ndarray, max_iter: int = 60
) -> tuple[np.ndarray, int]:
    """Newton's method on the fixed point ``log pi = log BR_tau(pi)`` in log space, batched over contexts.

    With ``z = log pi`` (normalised) and ``A = P - 1/2`` the equations are, for ``y`` in supp(mu),
    ``F_y(z, c) = z_y - log mu(y) - (A pi)(y)/tau - c = 0`` and ``1^T pi = 1``.  The Newton system in
    ``(dz, dc)`` is ``[[I - A diag(pi)/tau, -1], [pi^T, 0]]``; it is nonsingular because ``A`` is skew
    (``dz^T diag(pi) (I - A diag(pi)/tau) dz = dz^T diag(pi) dz``).  Steps are damped by backtracking
    on ``||z - log BR(z)||_2``, so the iteration only ever decreases the residual.
    """
    C, n = z.shape
    A = _skew(P)  # (C, n, n)
    eye = np.eye(n)
    r = _fp_residual(P, z, lmu, tau, on)
    rn = np.linalg.norm(r, axis=-1)  # (C,)
    active = rn > 1e-15
    it = 0
    stall = np.zeros(C, dtype=int)
    while active.any() and it < max_iter:
        it += 1
        idx = np.flatnonzero(active)
        pi = np.exp(z[idx])  # (k, n), 0 off the support
        M = np.zeros((idx.size, n + 1, n + 1))
        M[:, :n, :n] = np.where(on[idx][:, :, None], eye - A[idx] * pi[:, None, :] / tau, eye)
        M[:, :n, n] = np.where(on[idx], -1.0, 0.0)
        M[:, n, :n] = pi
        rhs = np.zeros((idx.size, n + 1))
        rhs[:, :n] = -r[idx]
        try:
            dz = np.linalg.solve(M, rhs[..., None])[..., 0][:, :n]
        except np.linalg.LinAlgError:
            dz = np.stack([np.linalg.lstsq(m, b, rcond=None)[0][:n] for m, b in zip(M, rhs)])
        dz = np.where(on[idx], dz, 0.0)
        alpha = np.ones(idx.size)
        accepted = np.zeros(idx.size, dtype=bool)
        for _ in range(40):  # backtracking, vectorised over the active contexts
            with np.errstate(invalid="ignore"):
                zt = np.where(on[idx], _xp.log_normalize(z[idx] + alpha[:, None] * dz), -np.inf)
            rt = _fp_residual(P[idx], zt, lmu[idx], tau, on[idx])
            rtn = np.linalg.norm(rt, axis=-1)
            good = ~accepted & (rtn < rn[idx])
            sel = idx[good]
            z[sel], r[sel], rn[sel] = zt[good], rt[good], rtn[good]
            accepted |= good
            if accepted.all():
                break
            alpha = np.where(accepted, alpha, alpha / 2)
        stall[idx] = np.where(accepted, 0, stall[idx] + 1)
        active = (rn > 1e-15) & (stall < 2)
    return z, it


def solve_regularized_nash(
    game: PreferenceGame | Any,
    tau: float,
    ref: Any = None,
    solver: str | None = None,
    check: bool = True,
    polish: bool = True,
    *,
    tol: float | None = None,
    throw: bool = True,
    solver_options: dict[str, Any] | None = None,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, EquilibriumInfo]:
    """KL-regularised Nash equilibrium ``pi*_tau`` of each context, by convex programming and polishing.

    SPEC.md 1(b): the regularised game ``J_tau(pi, pi') = pi^T P pi' - tau KL(pi||mu) + tau KL(pi'||mu)``
    has a unique, symmetric saddle point ``(pi*_tau, pi*_tau)``, the maximiser of the concave

        f(pi) = 1/2 - tau KL(pi||mu) - tau LSE_y( log mu(y) + (A pi)(y)/tau ),   A = P - 1/2,

    with optimal value exactly 1/2.  Since ``f(pi) = 1/2 - DG_tau(pi)/2`` and
    ``DG_tau(pi) = 2 tau KL(pi || BR_tau(pi))`` (SPEC.md 1(c)), the program solved (divided by ``tau``
    for DPP) is ``minimize KL(pi||mu) + LSE(log mu + A pi/tau)`` over the simplex, an exponential-cone
    program whose optimum is 0.  Interior-point accuracy (KL ~1e-8 to the answer) is then polished in
    float64 log space by Newton's method on the fixed-point condition (SPEC.md 1(d))

        pi*_tau(y) = BR_tau(pi*_tau)(y) = mu(y) exp( P(y > pi*_tau)/tau ) / Z,

    batched over contexts, until ``max_y |log pi(y) - log BR_tau(pi)(y)|`` stops decreasing (typically
    1e-15).  Responses with ``mu(y) = 0`` get probability 0; the rest get positive probability.

    Args:
        game: a :class:`~nashalign.game.PreferenceGame` (numpy or torch), or a preference matrix.
        tau: KL strength, ``> 0`` (use :func:`solve_nash` for ``tau = 0``).
        ref: reference ``mu``, ``(n,)`` or ``(C, n)``; default the game's ``ref``.
        solver: cvxpy solver with exponential-cone support; default ``"CLARABEL"``.
        check: verify ``tau KL(pi || BR_tau(pi)) < tol`` after solving.
        polish: run the float64 Newton polish (without it expect ``KL ~ 1e-8``).
        tol: target on the regularised exploitability ``DG_tau(pi)/2``; default 1e-12 with ``polish``,
            else 1e-6.
        throw: when the check fails, raise :class:`EquilibriumError` (default) or only warn.
        solver_options: extra keyword arguments for ``cvxpy.Problem.solve``.
        return_info: also return an :class:`EquilibriumInfo`.

    Returns:
        ``pi*_tau`` as numpy float64, ``(n,)`` for a single-context game, else ``(C, n)``; with
        ``return_info`` a pair ``(pi*_tau, info)``.

    Raises:
        TypeError: ``game`` is not a game, ``tau`` is not a real number, or a flag is not a bool.
        ValueError: ``tau <= 0``, a bad ``ref``, or an unknown solver.
        EquilibriumError: the check failed and ``throw=True``.

    Examples:
        >>> import numpy as np
        >>> from nashalign import games
        >>> from nashalign.equilibrium import solve_regularized_nash
        >>> g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
        >>> pi = solve_regularized_nash(g, tau=0.1)
        >>> br = g.ref * np.exp(g.win_rates(pi) / 0.1)
        >>> bool(np.allclose(pi, br / br.sum(), rtol=1e-12, atol=0))   # pi*_tau = BR_tau(pi*_tau)
        True
    """
    game = _as_game(game)
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
        raise TypeError(f"tau must be a real number > 0, got {tau!r} ({type(tau).__name__}).")
    tau = float(tau)
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(
            f"tau must be finite and > 0, got {tau!r}: the KL-regularised equilibrium needs a positive "
            "regularisation strength; use solve_nash(game) for the unregularised game (tau = 0)."
        )
    if tau < TAU_FLOOR:
        raise ValueError(
            f"tau={tau!r} is below {TAU_FLOOR:g}: the program's A/tau overflows float64. For tau -> 0 the regularised "
            "equilibrium tends to a Nash equilibrium: use solve_nash(game)."
        )
    name = _solver_name(solver)
    _check_flags(check=check, throw=throw, polish=polish, return_info=return_info)
    tol = V.check_positive(1e-12 if polish else 1e-6, "tol") if tol is None else V.check_positive(tol, "tol")
    opts = _opts(name, _CLARABEL_EXP, solver_options)

    P = np.asarray(_xp.to_numpy(game.P), dtype=np.float64)  # (C, n, n)
    A = _skew(P)  # (C, n, n)
    C = game.num_contexts
    mu = game.ref if ref is None else game.policy(ref, "ref")
    mu = np.asarray(_xp.to_numpy(mu), dtype=np.float64)  # (C, n)
    on = mu > 0  # (C, n) support of mu
    lmu = np.where(on, np.log(np.where(on, mu, 1.0)), -np.inf)  # (C, n)

    t0 = time.perf_counter()
    x = mu.copy()
    value = np.full(C, 0.5)
    status: list[str] = []
    iters = np.full(C, -1)
    for c in range(C):  # one compiled problem per support size, re-solved per context
        S = np.flatnonzero(on[c])
        if S.size == 1:
            status.append("trivial")
            continue
        mus = mu[c, S] / mu[c, S].sum()
        xs, st, its, val = _exp_solve_one(A[c][np.ix_(S, S)] / tau, mus, name, opts)
        status.append(st)
        iters[c] = its
        value[c] = 0.5 - tau * val
        if xs is not None:
            x[c] = 0.0
            x[c, S] = xs
    x = _simplex_clean(np.where(on, x, 0.0))
    t1 = time.perf_counter()

    npol = 0
    with np.errstate(divide="ignore"):
        z = np.log(x)  # (C, n)
    if polish:
        # Start from one best-response step: finite on supp(mu) even where the solver returned 0.
        zb = _xp.log_normalize(lmu + np.einsum("cij,cj->ci", P, x) / tau)
        zb = np.where(on, zb, -np.inf)
        use_b = np.linalg.norm(_fp_residual(P, zb, lmu, tau, on), axis=-1) < np.linalg.norm(
            np.nan_to_num(_fp_residual(P, z, lmu, tau, on), nan=np.inf, posinf=np.inf, neginf=np.inf), axis=-1
        )
        z = np.where(use_b[:, None], zb, z)
        z, npol = _newton_polish(P, z, lmu, tau, on)
    pi = np.exp(z)
    pi = pi / pi.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        logp = np.log(pi)
    reg = reg_expl_logp(P, logp, lmu, tau)  # (C,)
    res = np.max(np.abs(_fp_residual(P, z, lmu, tau, on)), axis=-1)
    expl = np.max(np.einsum("cij,cj->ci", P, pi), -1) - 0.5
    t2 = time.perf_counter()

    if check and not np.all(reg < tol):
        bad = np.flatnonzero(~(reg < tol))
        _report(
            f"solve_regularized_nash(tau={tau:g}) did not reach regularised exploitability < {tol:g}: "
            f"contexts {bad[:5].tolist()} have tau*KL(pi||BR_tau(pi)) = {reg[bad[:5]].tolist()} and "
            f"fixed-point residual {res[bad[:5]].tolist()} (solver {name}, status "
            f"{[status[i] for i in bad[:5]]}). Try polish=True, another solver, or throw=False.",
            throw,
        )
    return _result(game, pi, return_info, name, status, value, expl, iters, npol, (t0, t1, t2), reg, res)

