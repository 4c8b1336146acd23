"""INPO: Iterative Nash Policy Optimization (Zhang et al. 2024; SPEC.md section 8).

Tabular rule, OMD on the regularised game.  The paper writes it with an *inverse* step ``eta_inv`` and
``r = tau / eta_inv``::

    log pi_{t+1} = r log mu + (1 - r) log pi_t + P(. > pi_t) / eta_inv + c,

which is nashalign's step-size form with ``eta = 1/eta_inv`` (use :meth:`INPO.from_paper`).  Fixed point
``pi*_tau``; linear last-iterate convergence only when ``eta`` is small relative to ``tau`` (SPEC.md 12(b)).

Loss (COMAL's ``nash_loss``, cross-checked in SPEC.md): pairs ``(y_w, y_l)`` from ``pi_t`` labelled by
the oracle, ``h_t = [log pi_theta - r log mu - (1-r) log pi_t](y_w) - [same](y_l)``,
``L = E (h_t - 1/(2 eta_inv))^2``.  With soft labels this is the pairwise regression onto
``eta (P(y > y') - 1/2)``, whose minimiser over i.i.d. pairs from ``pi_t`` is the step (the IPO trick).

Reference: Y. Zhang, D. Yu, B. Peng, L. Song, Y. Tian, M. Huo, N. Jiang, H. Mi, D. Yu, arXiv 2407.00617 (ICLR 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register
from nashalign.schedules import from_inverse_step


@register
@dataclass(frozen=True)
class INPO(MirrorAlgorithm):
    """INPO's OMD step on the regularised game (needs ``tau > 0`` and ``eta tau <= 1``)."""

    name = "inpo"
    reference = "Zhang et al., 'Iterative Nash Policy Optimization', arXiv 2407.00617."
    tau_rule = "positive"
    forms = ("regression", "logistic", "pg")
    estimator = "pair"

    @classmethod
    def from_paper(cls, eta_inv: float, tau: float, **kw: object) -> INPO:
        """Build from the paper's inverse step ``eta_inv`` (``r = tau/eta_inv``; COMAL uses ``tau/eta_inv = 1/3``)."""
        return cls(eta=from_inverse_step(eta_inv), tau=tau, **kw)

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
