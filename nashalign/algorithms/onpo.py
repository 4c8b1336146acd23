"""ONPO: Optimistic Nash Policy Optimization (Zhang et al. 2025; SPEC.md 14.4).

Optimistic online mirror descent (two-sequence form, Rakhlin & Sridharan 2013) on the (regularised)
preference game.  A secondary sequence ``pi_hat`` carries the mirror step; the played policy ``pi_t`` is a
step from ``pi_hat_{t-1}`` along the *prediction* ``M_t = P(. > pi_{t-1})`` (the last gradient)::

    log pi_t     = (1 - eta tau) log pi_hat_{t-1} + eta tau log mu + eta P(. > pi_{t-1}) + const   (phase 0)
    log pi_hat_t = (1 - eta tau) log pi_hat_{t-1} + eta tau log mu + eta P(. > pi_t)     + const   (phase 1)

with ``pi_0 = pi_hat_0``.  It is EGPO's extragradient with the half step's opponent replaced by the previous
half step ("past extragradient"): one *fresh* opponent per iteration instead of two.  The state's ``logp``
is ``pi_hat``; ``memory["half"]`` is the played ``pi_t`` (kept across iterations, opponent kind ``"half"``).

Guarantee (paper): O(1/T) duality gap (vs O(1/sqrt T) for the no-regret self-play methods), from the
bounded regret of optimistic OMD; fixed point ``pi*_tau`` (``tau = 0``: a Nash equilibrium).  Loss: the
pairwise regression (INPO-type) anchored at ``pi_hat``, whose table minimiser is the step.  Sampled
feedback: the default ``"opponent"`` estimator draws ``k`` responses from ``pi_hat`` and one opponent sample
from the played policy per response, one Bernoulli label each (no estimate of ``P(y > pi_t)`` is formed);
``estimator="pair"`` draws the pair from the played policy instead (1 query per prompt per phase).

Reference: Y. Zhang, D. Yu, T. Ge, L. Song, Z. Zeng, H. Mi, N. Jiang, D. Yu, "Improving LLM General
Preference Alignment via Optimistic Online Mirror Descent", arXiv 2502.16852 (NeurIPS 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class ONPO(MirrorAlgorithm):
    """Optimistic OMD: phase 0 plays against the previous played policy, phase 1 against the new one."""

    name = "onpo"
    reference = "Zhang et al., 'Improving LLM General Preference Alignment via Optimistic Online Mirror Descent', arXiv 2502.16852."
    phases = 2
    forms = ("regression", "logistic", "pg")

    def init_memory(self, logp0, logmu):
        return {"half": logp0}

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (Opponent("half", 1.0, state.memory["half"]),)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        if phase == 0:  # the played policy pi_t: remembered, pi_hat stays
            return State(state.t, state.logp, state.logmu, {"half": logp_new})
        return State(state.t + 1, logp_new, state.logmu, {"half": state.memory["half"]})
