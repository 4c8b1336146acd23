"""Exploitability, duality gaps, KL divergence and win rates (SPEC.md section 1(c)).

All functions are batched over contexts: a game built from one ``(n, n)`` matrix gives floats, a
``(C, n, n)`` game gives ``(C,)`` arrays.  The private ``*_logp`` kernels take log-policies
``(C, n)`` and are what the solver driver records every few steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nashalign import _validation as V
from nashalign import _xp
from nashalign.game import PreferenceGame

Array = Any


# ----------------------------------------------------------------------------- kernels (log space)
def expl_logp(P: Array, logp: Array) -> Array:
    """``expl(pi) = max_y P(y > pi) - 1/2`` from ``log pi``; ``(C,)``."""
    return expl_from_win_rates(_xp.matvec(P, _xp.exp(logp)))


def expl_from_win_rates(w: Array) -> Array:
    """:func:`expl_logp` from the win rates ``w = P(. > pi)`` (``(C, n)``) already computed; ``(C,)``."""
    return _xp.amax(w, axis=-1) - 0.5


def reg_expl_logp(P: Array, logp: Array, logmu: Array, tau: float) -> Array:
    """Regularised exploitability ``DG_tau(pi)/2 = tau KL(pi || BR_tau(pi))``; ``(C,)``.

    ``DG_tau(pi)/2 = tau LSE_y(log mu(y) + P(y > pi)/tau) + tau KL(pi || mu) - 1/2`` (SPEC.md 1(c));
    it is zero exactly at the regularised equilibrium ``pi*_tau``.  Computed as ``tau KL(pi || BR)``,
    which is non-negative by construction and accurate near zero.
    """
    pi = _xp.exp(logp)
    return reg_expl_from_win_rates(_xp.matvec(P, pi), pi, logp, logmu, tau)


def reg_expl_from_win_rates(w: Array, pi: Array, logp: Array, logmu: Array, tau: float) -> Array:
    """:func:`reg_expl_logp` from ``w = P(. > pi)`` and ``pi = exp(logp)`` already computed; ``(C,)``.

    Lets a caller that needs both exploitabilities (the solver's recorder) read ``P`` once.
    """
    br = _xp.log_normalize(logmu + w / tau)  # (C, n) log BR_tau(pi)
    return tau * _kl_nonneg(pi, logp, br)


def _kl_nonneg(p: Array, logp: Array, logq: Array) -> Array:
    """``KL(p || q)`` as ``sum_y [p r + q - p]`` with ``r = log p - log q``; ``(C,)``.

    Equal to ``sum_y p r`` when ``p`` and ``q`` are normalised, but every term is ``>= 0`` and, near
    ``p = q``, of size ``p r^2 / 2`` (computed as ``p (r + expm1(-r))``), so the result is accurate down
    to ~1e-30 instead of resting on a rounding floor of ~1e-16: a solver polished to machine
    precision then reads as such, even for large ``tau``.  ``p(y) = 0`` contributes ``q(y)``;
    ``p(y) > 0 = q(y)`` gives ``inf``.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # masked -inf - -inf entries; torch ignores this
        pos = p > 0
        zero = _xp.zeros_like(p)
        r = _xp.where(pos, logp - logq, zero)  # (C, n); +inf where q = 0 < p
        near = abs(r) < 0.5
        rs = _xp.where(near, r, zero)
        term_near = p * (rs + _xp.expm1(-rs))  # = p r + q - p without cancellation
        term_far = p * r + _xp.exp(logq) - p
        term = _xp.where(pos, _xp.where(near, term_near, term_far), _xp.exp(logq))  # (C, n)
    return _xp.asum(term, axis=-1)


def kl_logp(logp: Array, logq: Array) -> Array:
    """``KL(p || q)`` from normalised log-probabilities, ``(C,)``; ``0 log 0 = 0``.

    Computed as :func:`_kl_nonneg` (every term ``>= 0``), so it never reads below zero from rounding: a float32
    run at its target reads ~1e-14, not -1e-8.
    """
    return _kl_nonneg(_xp.exp(logp), logp, logq)


# ----------------------------------------------------------------------------- public API
def as_game(game: Any) -> PreferenceGame:
    """``game`` itself, or a :class:`PreferenceGame` built from a preference matrix ``P`` (``(n, n)``/``(C, n, n)``)."""
    if isinstance(game, PreferenceGame):
        return game
    if _xp.is_torch(game) or isinstance(game, (np.ndarray, list, tuple)):
        return PreferenceGame(game)
    raise TypeError(
        f"game must be a PreferenceGame (or a preference matrix P of shape (n, n) / (C, n, n)), got "
        f"{type(game).__name__}. Build one with nashalign.games or PreferenceGame(P)."
    )


def _out(game: PreferenceGame, val: Array) -> Any:
    if game.squeezed:
        return float(val[0])
    return val


def _ref_log(game: PreferenceGame, ref: Any) -> Array:
    if ref is None:
        return game.log_ref
    return _xp.log(game.policy(ref, "ref"))


def exploitability(game: PreferenceGame, policy: Any, tau: float = 0.0, ref: Any = None) -> Any:
    """How far ``policy`` is from equilibrium.

    With ``tau = 0``: ``expl(pi) = max_y P(y > pi) - 1/2`` (zero iff ``pi`` is a Nash equilibrium,
    i.e. a minimax winner; at most 1/2).  With ``tau > 0``: the regularised exploitability
    ``DG_tau(pi)/2 = tau KL(pi || BR_tau(pi))`` with ``BR_tau(pi) ∝ mu exp(P pi / tau)`` (zero exactly at
    the regularised equilibrium ``pi*_tau``).  Both are half the symmetric duality gap.

    Args:
        game: the preference game (or its matrix ``P``, ``(n, n)`` or ``(C, n, n)``).
        policy: probabilities, ``(n,)`` or ``(C, n)``.
        tau: KL strength ``tau >= 0``.
        ref: reference ``mu`` for ``tau > 0`` (default: the game's).

    Returns:
        A float for a single-context game, else a ``(C,)`` array.

    Examples:
        >>> from nashalign import games, exploitability
        >>> exploitability(games.rock_paper_scissors(), [1.0, 0.0, 0.0])
        0.5
    """
    game = as_game(game)
    tau = V.check_tau(tau)
    pi = game.policy(policy)
    logp = _xp.log(pi)
    if tau == 0:
        return _out(game, expl_logp(game.P, logp))
    return _out(game, reg_expl_logp(game.P, logp, _ref_log(game, ref), tau))


def duality_gap(
    game: PreferenceGame, policy: Any, opponent: Any = None, tau: float = 0.0, ref: Any = None
) -> Any:
    """Duality gap of the profile ``(pi1, pi2)`` (SPEC.md 1(c)); ``pi2 = pi1`` when ``opponent`` is None.

    Unregularised: ``DG(pi1, pi2) = max_y (P pi2)(y) - min_y (P^T pi1)(y)``.
    Regularised (``tau > 0``): ``DG_tau(pi1, pi2) = max_pi J_tau(pi, pi2) - min_pi J_tau(pi1, pi)``
    ``= tau LSE(log mu + P pi2/tau) + tau KL(pi2||mu) + tau KL(pi1||mu) + tau LSE(log mu - P^T pi1/tau)``.
    For a symmetric profile it is twice :func:`exploitability`.
    """
    game = as_game(game)
    tau = V.check_tau(tau)
    p1 = game.policy(policy, "policy")
    p2 = p1 if opponent is None else game.policy(opponent, "opponent")
    P = game.P
    w2 = _xp.matvec(P, p2)  # (C, n): P(y > pi2)
    l1 = _xp.rmatvec(P, p1)  # (C, n): P(pi1 > y')
    if tau == 0:
        return _out(game, _xp.amax(w2) - _xp.amin(l1))
    logmu = _ref_log(game, ref)
    kl1 = _xp.xlogy_diff(p1, _xp.log(p1), logmu)
    kl2 = _xp.xlogy_diff(p2, _xp.log(p2), logmu)
    val = tau * (
        _xp.logsumexp(logmu + w2 / tau) + kl2 + kl1 + _xp.logsumexp(logmu - l1 / tau)
    )
    return _out(game, val)


def kl_divergence(game: PreferenceGame, p: Any, q: Any) -> Any:
    """``KL(p || q) = sum_y p(y) log(p(y)/q(y))`` per context (``inf`` if ``q`` misses ``p``'s support)."""
    game = as_game(game)
    pp = game.policy(p, "p")
    qq = game.policy(q, "q")
    return _out(game, _xp.xlogy_diff(pp, _xp.log(pp), _xp.log(qq)))


def win_rate(game: PreferenceGame, policy: Any, opponent: Any) -> Any:
    """``P(pi > pi') = pi^T P pi'``: the probability a response of ``policy`` beats one of ``opponent``."""
    return as_game(game).preference(policy, opponent, names=("policy", "opponent"))
