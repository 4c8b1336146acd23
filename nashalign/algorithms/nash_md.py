"""Nash-MD: Nash mirror descent (Munos et al. 2024; SPEC.md section 3).

Exact step, per context:

1. regularised opponent ``pi_t^mu = mix_{eta tau}(pi_t, mu)``, ``pi_t^mu ∝ pi_t^{1 - eta tau} mu^{eta tau}``;
2. mirror step against it::

       pi_{t+1}(y) ∝ pi_t(y)^{1 - eta tau} mu(y)^{eta tau} exp( eta P(y > pi_t^mu) ).

Guarantee (Thm 1), for ``0 < eta <= 1/tau``:
``KL(pi*_tau || pi_{t+1}) <= (1 - eta tau) KL(pi*_tau || pi_t) + 2 eta^2``; with the theorem step
``eta = log(T)/(tau T)`` (:func:`nashalign.schedules.nash_md_theorem`) the last iterate reaches
``pi*_tau``.  With a constant step it stops at the ``O(eta)``-biased fixed point
``pi = BR_tau(mix_{eta tau}(pi, mu))`` (SPEC.md 1(d), 12(b)).

``mixture``: a free mixture coefficient ``beta`` replacing ``eta tau`` in the opponent, as Nash-MD-PG and
TRL's ``NashMDTrainer`` (``mixture_coef``, default 0.5) do; its fixed point is ``BR_tau(mix_beta(pi, mu))``,
biased unless ``beta = 0`` (SPEC.md 12(d)).

Loss forms: ``"regression"`` (default; pairwise square onto ``eta (P(y > y'') - P(y' > y''))`` with
``y''`` from the mixture, table minimiser = the step) and ``"pg"``, the Nash-MD-PG policy gradient
``-(p - 1/2 - tau sg[log pi/mu](y)) grad log pi(y)`` in its importance-weighted proximal form.

Reference: R. Munos, M. Valko, D. Calandriello, et al., "Nash Learning from Human Feedback",
arXiv 2312.00886 (ICML 2024), Section 6 (Nash-MD) and Section 7 (Nash-MD-PG).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms import _blocks
from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class NashMD(MirrorAlgorithm):
    """Nash-MD: mirror step against the geometric mixture of the iterate and the reference."""

    name = "nash_md"
    reference = "Munos et al., 'Nash Learning from Human Feedback', arXiv 2312.00886."
    tau_rule = "positive"
    forms = ("regression", "pg")
    mixture: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixture is not None and not 0.0 <= float(self.mixture) <= 1.0:
            raise ValueError(f"nash_md: mixture must be in [0, 1] (None for eta * tau), got {self.mixture!r}.")

    def mixture_weight(self, t: int) -> float:
        """The weight ``w`` on ``mu`` in the opponent: ``eta_t tau`` (the theory) or the free ``mixture``."""
        return self.step_size(t) * self.tau if self.mixture is None else float(self.mixture)

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        w = self.mixture_weight(state.t)
        return (Opponent("mixture", 1.0, _blocks.geometric_mixture(state.logp, state.logmu, w), mix=w),)
