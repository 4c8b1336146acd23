"""Step-size schedules ``t -> eta_t`` (SPEC.md section 0, step-size form).

A step size is either a float (constant) or any callable ``eta(t: int) -> float`` for the iteration
``t = 0, 1, ...``; the constructors below are the schedules the papers use.

Examples:
    >>> from nashalign import schedules
    >>> round(schedules.nash_md_theorem(tau=0.1, horizon=100)(0), 6)   # log(100) / (0.1 * 100)
    0.460517
    >>> schedules.inverse_sqrt(0.3)(3)                                  # 0.3 / sqrt(4)
    0.15
    >>> schedules.from_inverse_step(10.0), schedules.from_mmd_step(1.0, tau=1.0)
    (0.1, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from nashalign._validation import check_int, check_positive

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Constant:
    """``eta_t = eta``."""

    eta: float

    def __post_init__(self) -> None:
        check_positive(self.eta, "eta")

    def __call__(self, t: int) -> float:
        return self.eta


def constant(eta: float) -> Constant:
    """Constant step size ``eta_t = eta``."""
    return Constant(eta)


@dataclass(frozen=True)
class NashMDTheorem:
    """Nash-MD's theorem step ``eta = log(T) / (tau T)`` for a horizon of ``T`` steps (Munos et al. 2024, Thm 1).

    With it, ``KL(pi*_tau || pi_T) <= (KL(pi*_tau || pi_0) + 2 log(T) / tau^2) / T`` (SPEC.md 3.1).
    """

    tau: float
    horizon: int

    def __post_init__(self) -> None:
        check_positive(self.tau, "tau", hint="Nash-MD's theorem step needs a regularised game.")
        object.__setattr__(self, "horizon", check_int(self.horizon, "horizon", 2, "It is the run's length T."))

    def __call__(self, t: int) -> float:
        return math.log(self.horizon) / (self.tau * self.horizon)


def nash_md_theorem(tau: float, horizon: int) -> NashMDTheorem:
    """Nash-MD's constant-in-``t`` theorem step ``log(T)/(tau T)`` (see :class:`NashMDTheorem`)."""
    return NashMDTheorem(tau, horizon)


@dataclass(frozen=True)
class Harmonic:
    """``eta_t = eta0 / (1 + eta0 tau (t + 1))``: the decaying ``~1/(tau t)`` step of strongly-monotone mirror descent."""

    eta0: float
    tau: float

    def __post_init__(self) -> None:
        check_positive(self.eta0, "eta0")
        check_positive(self.tau, "tau")

    def __call__(self, t: int) -> float:
        return self.eta0 / (1.0 + self.eta0 * self.tau * (t + 1))


def harmonic(eta0: float, tau: float) -> Harmonic:
    """Decaying step ``eta0 / (1 + eta0 tau (t+1))`` (see :class:`Harmonic`)."""
    return Harmonic(eta0, tau)


@dataclass(frozen=True)
class InverseSqrt:
    """``eta_t = eta0 / sqrt(t + 1)``: the no-regret step of MWU/SPPO for average-iterate convergence."""

    eta0: float

    def __post_init__(self) -> None:
        check_positive(self.eta0, "eta0")

    def __call__(self, t: int) -> float:
        return self.eta0 / math.sqrt(t + 1)


def inverse_sqrt(eta0: float) -> InverseSqrt:
    """``eta0 / sqrt(t + 1)`` (see :class:`InverseSqrt`)."""
    return InverseSqrt(eta0)


def as_schedule(eta: float | Schedule) -> Schedule:
    """A float becomes :class:`Constant`; a callable is returned unchanged."""
    if callable(eta):
        return eta
    return Constant(check_positive(eta, "eta"))


def from_inverse_step(eta_inv: float) -> float:
    """Convert a paper's *inverse* step (INPO's and DNO's ``eta``, SPPO's ``beta``) to nashalign's ``eta = 1/eta_inv``.

    SPEC.md section 0: ``log pi_{t+1} = (tau/eta_inv) log mu + (1 - tau/eta_inv) log pi_t + g_t/eta_inv + c`` is
    the step-size form with ``eta = 1/eta_inv``.  This is the single place nashalign performs that conversion.
    """
    return 1.0 / check_positive(eta_inv, "eta_inv")


def from_mmd_step(eta_m: float, tau: float) -> float:
    """Convert a magnetic-mirror-descent step ``eta_M`` (Sokota et al.; MPO) to ``eta = eta_M / (1 + eta_M tau)``."""
    eta_m = check_positive(eta_m, "eta_M")
    return eta_m / (1.0 + eta_m * check_positive(tau, "tau", allow_zero=True))
