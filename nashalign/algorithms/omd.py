"""Mirror descent on the KL-regularised game, "OMD-reg" (SPEC.md section 2); = MMD (Sokota et al. 2022).

Exact step::

    pi_{t+1}(y) ∝ pi_t(y)^{1 - eta tau} mu(y)^{eta tau} exp( eta P(y > pi_t) ),    eta tau <= 1.

Its fixed point is the regularised equilibrium ``pi*_tau``.  Linear last-iterate convergence needs a
step small relative to ``tau``: on rock-paper-scissors the linearisation at the equilibrium is stable iff
``eta < 2 tau / (tau^2 + 1/12)`` (SPEC.md 12(b)); above it the iterates cycle away.  A magnetic-mirror-
descent step ``eta_M`` converts with :func:`nashalign.schedules.from_mmd_step`.

Loss: the pairwise regression ``( [log pi_theta - a_t](y) - [log pi_theta - a_t](y') - eta (P(y > y') - 1/2) )^2``
with ``a_t = (1 - eta tau) log pi_t + eta tau log mu`` on pairs from ``pi_t`` (= INPO's loss, section 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class OMD(MirrorAlgorithm):
    """OMD-reg: one mirror step against the current iterate on the regularised game."""

    name = "omd"
    reference = "Sokota et al., 'A Unified Approach to Reinforcement Learning, QRE, and Mirror Descent', arXiv 2206.05825."
    tau_rule = "positive"
    forms = ("regression", "logistic", "pg")
    estimator = "pair"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
