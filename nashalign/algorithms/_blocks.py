"""Shared pieces of the exact steps, written once in log space and generic over numpy/torch.

Every multiplicative (mirror-descent) rule of SPEC.md has the form

    log pi_{t+1} = normalize( a_t + eta_t * s_t ),                        (M)

with the *anchor* ``a_t = (1 - eta tau) log pi_t + eta tau log mu`` (the log of the geometric mixture
``pi_t^{1 - eta tau} mu^{eta tau}``, unnormalised) and the *signal* ``s_t = sum_j c_j P(. > q_j)``, a
combination of win rates against the opponents ``q_j`` the algorithm names.  The algorithms differ
only in their opponents and in how many phases one iteration has.
"""

from __future__ import annotations

from typing import Any

from nashalign import _xp

Array = Any


def prox_anchor(logp: Array, logmu: Array, eta: float, tau: float) -> Array:
    """``a = (1 - eta tau) log pi + eta tau log mu`` (unnormalised log geometric mixture; ``(C, n)``).

    ``tau = 0`` gives ``a = log pi`` exactly (no ``0 * -inf`` where ``mu`` has zeros).
    Works on torch tensors of any shape, so the neural losses use the same definition.
    """
    w = eta * tau
    if w == 0:
        return logp
    if w == 1:
        return logmu
    return (1.0 - w) * logp + w * logmu


def geometric_mixture(logp: Array, logmu: Array, w: float) -> Array:
    """``log mix_w(pi, mu)``, with ``mix_w(pi, mu) ∝ pi^{1-w} mu^w`` (SPEC.md section 0); normalised."""
    if w == 0:
        return logp
    return _xp.log_normalize((1.0 - w) * logp + w * logmu)


def mirror_step(anchor: Array, eta: float, signal: Array) -> Array:
    """Rule (M): ``normalize(a + eta * s)``; ``(C, n)`` log-probabilities."""
    return _xp.log_normalize(anchor + eta * signal)


def win_rates(P: Array, logq: Array) -> Array:
    """``P(y > q) = (P q)(y)`` for a log-policy ``q``: ``(C, n, n), (C, n) -> (C, n)``."""
    return _xp.matvec(P, _xp.exp(logq))
