"""EGPO: Extragradient Preference Optimization (Zhou, Fazel, Du 2025; SPEC.md section 5).

Two phases per iteration, both anchored at ``pi_t``::

    log pi_{t+1/2} = (1 - eta tau) log pi_t + eta tau log mu + eta P(. > pi_t)       + c
    log pi_{t+1}   = (1 - eta tau) log pi_t + eta tau log mu + eta P(. > pi_{t+1/2}) + c

Fixed point ``pi*_tau``; last-iterate *linear* convergence with a step that need not shrink with ``tau``
(measured: converges for ``eta`` up to about 2 at every ``tau`` tested, SPEC.md 12(b)); ``tau = 0`` is
unregularised mirror-prox, last-iterate convergent to the Nash equilibrium.

Loss: the online-IPO-type square loss of the paper,
``( h_theta(y, y') - eta (P(y > y'') - P(y' > y'')) )^2`` with ``h`` the log-ratio difference against
the anchor ``a_t``; ``y''`` from ``pi_t`` in phase 0 and from the half-step policy in phase 1.  With
``eta = 1/tau`` the anchor is ``log mu`` and the target ``(P(y > y'') - P(y' > y''))/tau``: exactly the
paper's loss (5.2), whose single SGD step is the step; for other ``eta`` the table minimiser is the
step exactly.  Note: EGPO's LLM code length-normalises log-probs by default; nashalign's trainer has
that as a flag (SPEC.md section 11, note 4).

Reference: R. Zhou, M. Fazel, S. S. Du, arXiv 2503.08942 (COLM 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class EGPO(MirrorAlgorithm):
    """Extragradient (mirror-prox) on the regularised game; two phases per iteration."""

    name = "egpo"
    reference = "Zhou, Fazel, Du, 'Extragradient Preference Optimization (EGPO)', arXiv 2503.08942."
    phases = 2
    forms = ("regression", "logistic", "pg")

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        if phase == 0:
            return (current(state),)
        return (Opponent("half", 1.0, state.memory["half"]),)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        if phase == 0:  # the half step: remembered, the iterate stays pi_t
            return State(state.t, state.logp, state.logmu, {"half": logp_new})
        return State(state.t + 1, logp_new, state.logmu, {})
