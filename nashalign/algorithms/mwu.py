"""Multiplicative weights (Hedge) in self-play on the unregularised game (SPEC.md section 2).

Exact step (rule M with ``tau = 0``)::

    pi_{t+1}(y) ∝ pi_t(y) exp( eta P(y > pi_t) ).

Guarantee: no-regret, so the *average* iterate is an ``O(1/sqrt T)``-Nash equilibrium with
``eta ~ 1/sqrt T`` (Freund & Schapire 1999); the *last* iterate does not converge (on rock-paper-scissors
it spirals out to the boundary; SPEC.md 12(a)).  Loss: the pairwise regression of
``log pi_theta - log pi_t`` onto ``eta P(. > pi_t)``, whose table minimiser is the step.

Examples:
    >>> from nashalign import games, solve
    >>> r = solve(games.rock_paper_scissors(), "mwu", eta=0.1, steps=2000, init=[0.6, 0.3, 0.1])
    >>> bool(r.history["expl_avg"][-1] < 0.01 < r.history["expl_last"][-1])
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class MWU(MirrorAlgorithm):
    """Hedge / multiplicative weights: ``pi_{t+1} ∝ pi_t exp(eta P(. > pi_t))`` (``tau`` must be 0)."""

    name = "mwu"
    reference = "Freund & Schapire, 'Adaptive game playing using multiplicative weights', GEB 1999."
    tau_rule = "zero"
    forms = ("regression", "logistic", "pg")

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
