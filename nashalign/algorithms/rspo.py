"""RSPO: Regularized Self-Play Policy Optimization (Tang et al. 2025); SPEC.md section 18.

Self-play mirror descent on the game regularised by ``R(pi) = tau KL(pi || mu) + tau_f KL(mu || pi)``
(reverse and forward KL): the regulariser's gradient is subtracted from SPPO's reward,
``grad R(pi)(y) = tau (log(pi/mu)(y) + 1) - tau_f mu(y)/pi(y)``, so (constants drop in the normaliser)::

    log pi_{t+1} = normalize( (1 - eta tau) log pi_t + eta tau log mu + eta tau_f mu/pi_t + eta P(. > pi_t) ).

``tau_f = 0`` is OMD (and with ``tau = 0`` SPPO/MWU).  The fixed point solves
``P(y > pi) - tau log(pi/mu)(y) + tau_f mu(y)/pi(y) = const`` on the support: the Nash equilibrium of the
game regularised by ``R`` (not ``pi*_tau`` when ``tau_f > 0``).  The forward term's log-ratio
``log mu/pi_t`` is clamped at ``max_log_ratio`` (20 by default) in both the table and the loss, so long
sequences cannot overflow it.

Loss: rule M's forms with that anchor (``mu/pi_t`` is read off ``logp_ref - logp_anchor``); the table
minimiser is the step exactly.  Estimator: SPPO's win rates (``winrate``).

Reference: X. Tang, S. Yoon, S. Son, H. Yuan, Q. Gu, I. Bogunovic, "RSPO: Regularized Self-Play Alignment of
Large Language Models", arXiv 2503.00030.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nashalign import _xp
from nashalign._validation import check_positive
from nashalign.algorithms import _blocks
from nashalign.algorithms.base import LossInputs, MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


def forward_kl_anchor(logp: Any, logmu: Any, eta: float, tau: float, tau_f: float, max_log_ratio: float) -> Any:
    """``(1 - eta tau) log pi + eta tau log mu + eta tau_f mu/pi``; ``-inf`` stays where ``pi = 0``."""
    a = _blocks.prox_anchor(logp, logmu, eta, tau)
    if tau_f == 0:
        return a
    dead = logp == float("-inf")
    zero = _xp.zeros_like(logp)
    ratio = _xp.where(dead, zero, logmu - _xp.where(dead, zero, logp))
    ratio = _xp.where(ratio > max_log_ratio, zero + max_log_ratio, ratio)
    return _xp.where(dead, logp, a + eta * tau_f * _xp.exp(ratio))


@register
@dataclass(frozen=True)
class RSPO(MirrorAlgorithm):
    """SPPO-type self-play with reverse-KL (``tau``) and forward-KL (``tau_forward``) regularisers."""

    name = "rspo"
    reference = "Tang et al., 'RSPO: Regularized Self-Play Alignment of Large Language Models', arXiv 2503.00030."
    forms = ("regression", "logistic", "pg")
    estimator = "winrate"
    tau_forward: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "tau_forward", check_positive(self.tau_forward, "tau_forward", allow_zero=True))

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)

    def anchor(self, logp, logmu, t: int):
        return forward_kl_anchor(logp, logmu, self.step_size(t), self.tau, self.tau_forward, self.max_log_ratio)

    def loss_anchor(self, inputs: LossInputs):
        return self.anchor(inputs.logp_anchor, inputs.logp_ref, inputs.step)
