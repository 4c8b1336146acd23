"""Optimistic multiplicative weights, OMWU (single-sequence form; SPEC.md section 2; ONPO in section 10).

Exact step::

    pi_{t+1} ∝ pi_t^{1 - eta tau} mu^{eta tau} exp( eta (2 P(. > pi_t) - P(. > pi_{t-1})) ),

with ``pi_{-1} = pi_0``.  Last-iterate convergence in the unregularised game (Daskalakis & Panageas 2019;
Wei et al. 2021, linear for a unique equilibrium) and to ``pi*_tau`` for ``tau > 0``.

Loss: the pairwise regression with signal ``2 P(y > pi_t) - P(y > pi_{t-1})`` (two opponents).
Reference: C. Daskalakis, I. Panageas, "Last-Iterate Convergence: Zero-Sum Games and Constrained Min-Max
Optimization", ITCS 2019; Y. Zhang et al. (ONPO), arXiv 2502.16852.
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class OMWU(MirrorAlgorithm):
    """Optimistic MWU: the signal is extrapolated, ``2 P(. > pi_t) - P(. > pi_{t-1})``."""

    name = "omwu"
    reference = "Daskalakis & Panageas, 'Last-Iterate Convergence: Zero-Sum Games and Constrained Min-Max Optimization', 2019."
    forms = ("regression", "logistic", "pg")

    def init_memory(self, logp0, logmu):
        return {"prev": logp0}

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (Opponent("current", 2.0, state.logp), Opponent("previous", -1.0, state.memory["prev"]))

    def next_memory(self, state: State, logp_new):
        return {"prev": state.logp}
