"""COMAL: the conceptual prox-point meta-algorithm (Liu, Oikonomou, Zheng, Cai, Cohan 2024; SPEC.md 14.2).

Proximal point on the preference game: prox step ``k`` is the regularised game whose KL centre is the
previous prox iterate,

    pi_{k+1} = NE of  max_pi min_pi'  P(pi > pi') - tau KL(pi || c_k) + tau KL(pi' || c_k),   c_k = pi_k,

and the centres converge to a Nash equilibrium of the *unregularised* game for any fixed ``tau > 0``
(last iterate).  Each prox step is solved inexactly by ``every`` iterations of an inner solver
anchored at the centre; here the inner solver is EGPO's extragradient step (two phases, the solver
:func:`nashalign.prox.solve_minimax` uses), so one iteration is::

    log pi_{t+1/2} = (1 - eta tau) log pi_t + eta tau log c_k + eta P(. > pi_t)       + const
    log pi_{t+1}   = (1 - eta tau) log pi_t + eta tau log c_k + eta P(. > pi_{t+1/2}) + const
    c_{k+1} = pi_{t+1}   when (t + 1) is a multiple of ``every``   (the "reference update").

The centre is the state's ``logmu`` (it is what the step is regularised toward), so the sampled
estimator and the loss read it from the same place as every other rule; the LLM trainer re-points its
reference at the current policy when :meth:`ProxCentre.recentres_at` says so.

:class:`ProxCentre` is the shared prox-point machinery (centre reset every ``every`` iterations, optional
weight ``centre_ref_weight`` of the original reference in the centre) that :mod:`.mpo` and :mod:`.nash_prox` reuse.

Reference: Y. Liu, A. Oikonomou, W. Zheng, Y. Cai, A. Cohan, "COMAL: A Convergent Meta-Algorithm for
Aligning LLMs with General Preferences", arXiv 2410.23223 (code: github.com/yale-nlp/COMAL, whose
inner solver is INPO's loss; use ``mpo`` for the single-phase OMD/INPO inner step).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from nashalign import _xp
from nashalign.algorithms.base import State
from nashalign.algorithms.egpo import EGPO
from nashalign.algorithms.registry import register


@dataclass(frozen=True)
class ProxCentre:
    """Mixin: the KL centre ``c_k`` (the state's ``logmu``) is reset to the iterate every ``every`` iterations.

    ``c_k = mix_w(pi_k, mu)`` with ``w = centre_ref_weight()`` (0 for MPO/COMAL: the centre is the iterate
    itself); the original reference ``mu`` is kept in ``memory["ref"]`` when ``w > 0``.
    """

    every: int = 10

    def _check_every(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, numbers.Integral) or self.every < 1:
            raise ValueError(
                f"{self.name}: every (iterations between centre resets) must be an integer >= 1, got {self.every!r}."
            )

    def centre_ref_weight(self) -> float:
        """Weight ``w`` of the original reference ``mu`` in the centre ``c_k ∝ pi_k^{1-w} mu^w``."""
        return 0.0

    def recentres_at(self, t: int) -> bool:
        """True when the centre becomes the iterate at the start of iteration ``t`` (``t > 0``, ``t % every == 0``)."""
        return t > 0 and t % int(self.every) == 0

    @property
    def target_tau(self) -> float:
        """KL strength of the equilibrium the centres converge to (0: the unregularised Nash equilibrium)."""
        return 0.0

    def centre_of(self, logp: Any, memory: Any) -> Any:
        """``log c = normalize((1 - w) log pi + w log mu)`` (``log pi`` itself when ``w = 0``)."""
        w = self.centre_ref_weight()
        if w == 0:
            return logp
        return _xp.log_normalize((1.0 - w) * logp + w * memory["ref"])

    def recentre(self, state: State) -> State:
        """Reset ``logmu`` to the centre of the new iterate when ``state.t`` is a multiple of ``every``."""
        if not self.recentres_at(state.t):
            return state
        return State(state.t, state.logp, self.centre_of(state.logp, state.memory), state.memory)


@register
@dataclass(frozen=True)
class COMAL(ProxCentre, EGPO):
    """Proximal point with EGPO inner steps: the centre (``logmu``) becomes the iterate every ``every`` iterations."""

    name = "comal"
    reference = "Liu et al., 'COMAL: A Convergent Meta-Algorithm for Aligning LLMs with General Preferences', arXiv 2410.23223."
    tau_rule = "positive"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_every()

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        return self.recentre(super().accept(state, logp_new, phase))
