"""COMAL: the conceptual prox-point meta-algorithm (Liu, Oikonomou, Zheng, Cai, Cohan 2024; SPEC.md 14.2).

Proximal point on the preference game: prox step ``k`` is the regularised game whose KL centre is the
previous prox iterate,

    pi_{k+1} = NE of  max_pi min_pi'  P(pi > pi') - tau KL(pi || c_k) + tau KL(pi' || c_k),   c_k = pi_k,

and the centres converge to a Nash equilibrium of the *unregularised* game for any fixed ``tau > 0``
(last iterate).  Each prox step is solved inexactly by ``every`` iterations of an inner solver
anchored at the centre.  The default inner solver is EGPO's extragradient step (two phases, the solver
:func:`nashalign.prox.solve_minimax` uses); ``inner="inpo"`` is the official code's INPO step (one phase,
:meth:`COMAL.from_code`), the same rule as ``mpo``.  With EGPO one iteration is::

    log pi_{t+1/2} = (1 - eta tau) log pi_t + eta tau log c_k + eta P(. > pi_t)       + const
    log pi_{t+1}   = (1 - eta tau) log pi_t + eta tau log c_k + eta P(. > pi_{t+1/2}) + const
    c_{k+1} = pi_{t+1}   when (t + 1) is a multiple of ``every``   (the "reference update").

The centre is the state's ``logmu`` (it is what the step is regularised toward), so the sampled
estimator and the loss read it from the same place as every other rule; the LLM trainer re-points its
reference at the current policy when :meth:`ProxCentre.recentres_at` says so.

:class:`ProxCentre` is the shared prox-point machinery (centre reset every ``every`` iterations, optional
weight ``centre_ref_weight`` of the original reference in the centre) that :mod:`.mpo` and :mod:`.nash_prox` reuse.

Reference: Y. Liu, A. Oikonomou, W. Zheng, Y. Cai, A. Cohan, "COMAL: A Convergent Meta-Algorithm for
Aligning LLMs with General Preferences", arXiv 2410.23223 (code: github.com/yale-nlp/COMAL, comal.sh: INPO
inner loss, reference updated when ``(iter + 1) % 12 == 0``, the reset rule here).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from nashalign import _xp
from nashalign.algorithms.base import Opponent, State, current
from nashalign.algorithms.egpo import EGPO
from nashalign.algorithms.registry import register
from nashalign.schedules import from_inverse_step

#: COMAL's inner solvers and their phases per iteration: EGPO's extragradient (as ``solve_minimax``) or INPO's
#: single OMD step (the official code's ``inpo.py``; the same rule as :mod:`.mpo`).
INNER_SOLVERS = {"egpo": 2, "inpo": 1}


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
    """Proximal point: ``inner`` steps (EGPO's extragradient, or INPO's OMD step as in the official code) toward
    the centre ``logmu``, which becomes the iterate every ``every`` iterations."""

    name = "comal"
    reference = "Liu et al., 'COMAL: A Convergent Meta-Algorithm for Aligning LLMs with General Preferences', arXiv 2410.23223."
    tau_rule = "positive"
    inner: str = "egpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_every()
        if self.inner not in INNER_SOLVERS:
            raise ValueError(f"comal: inner must be one of {list(INNER_SOLVERS)}, got {self.inner!r}.")

    @classmethod
    def from_code(cls, eta_inv: float = 0.002, tau_eta_ratio: float = 1 / 3, every: int = 12, **kw: object) -> COMAL:
        """The official code's parametrisation (comal.sh: INPO inner loss with ``eta = 0.002``, ``tau/eta = 1/3``,
        reference updated every 12 iterations): ``eta = 1/eta_inv``, ``tau = ratio * eta_inv``, ``inner = "inpo"``."""
        return cls(eta=from_inverse_step(eta_inv), tau=tau_eta_ratio * eta_inv, every=every, inner="inpo", **kw)

    @property
    def phases(self) -> int:  # type: ignore[override]
        return INNER_SOLVERS[self.inner]

    @property
    def estimator(self) -> str:  # type: ignore[override]
        return "opponent" if self.inner == "egpo" else "pair"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return super().opponents(state, phase) if self.inner == "egpo" else (current(state),)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        if self.inner == "inpo":  # one OMD step per iteration (= mpo's rule)
            return self.recentre(State(state.t + 1, logp_new, state.logmu, {}))
        return self.recentre(super().accept(state, logp_new, phase))
