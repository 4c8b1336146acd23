"""APO: Accelerated Preference Optimization (He, Yuan, Gu 2024), SPPO instance; SPEC.md section 16.

The paper views iterative preference optimisation as a proximal point method and adds Nesterov
extrapolation.  With ``pi_hat`` the proximal iterates and ``pi`` the extrapolated ones (the policy that
samples)::

    pi_hat_{t+1} ∝ pi_t exp( eta P(. > pi_t) )                        (SPPO's proximal step, eta = 1/beta)
    pi_{t+1}     ∝ pi_hat_{t+1} (pi_hat_{t+1} / pi_hat_t)^alpha        (extrapolation, t >= 1)

Eliminating ``pi_hat`` (``pi_hat_t ∝ pi_{t-1} exp(eta P(. > pi_{t-1}))``) gives one mirror step whose anchor
and signal both use the previous iterate::

    log pi_{t+1} = normalize( (1+alpha) log pi_t - alpha log pi_{t-1}
                              + eta [ (1+alpha) P(. > pi_t) - alpha P(. > pi_{t-1}) ] ).

nashalign starts the momentum at zero velocity, ``pi_{-1} = pi_0``, so the first step is the plain proximal
step ``pi_1 = pi_hat_1`` (the opponents are then the same at every ``t``).  ``alpha = 0`` is SPPO/MWU exactly.  The paper proves an ``O(1/t^2)``-type rate for the (BT-reward) DPO
case under a minimal-sub-optimality-gap assumption; nashalign measures what happens on intransitive
games (tabular/README.md, "APO acceleration").

Opponents: ``current`` (coefficient ``1 + alpha``) and ``previous`` (``-alpha``).
Loss: rule M's forms with the anchor ``(1+alpha) log pi_t - alpha log pi_{t-1}`` (the loss reads
``LossInputs.logp_previous``); the table minimiser is the step exactly.  For language models the
extrapolation is in log-probability space, like the table (the paper's code is not public).

Reference: J. He, H. Yuan, Q. Gu, "Accelerated Preference Optimization for Large Language Model
Alignment", arXiv 2410.06293, Algorithm 1 (SPPO loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nashalign import _xp
from nashalign.algorithms import _blocks
from nashalign.algorithms.base import LossInputs, MirrorAlgorithm, Opponent, State
from nashalign.algorithms.registry import register


def extrapolated_anchor(logp: Any, logp_prev: Any, alpha: float) -> Any:
    """``(1 + alpha) log pi_t - alpha log pi_{t-1}`` (numpy/torch, any shape); ``-inf`` where ``pi_t = 0``."""
    if alpha == 0:
        return logp
    dead = logp == float("-inf")
    zero = _xp.zeros_like(logp)
    a = (1.0 + alpha) * _xp.where(dead, zero, logp) - alpha * _xp.where(dead, zero, logp_prev)
    return _xp.where(dead, logp, a)


@register
@dataclass(frozen=True)
class APO(MirrorAlgorithm):
    """SPPO's proximal step followed by Nesterov extrapolation with momentum ``alpha`` (``tau`` must be 0)."""

    name = "apo"
    reference = "He, Yuan, Gu, 'Accelerated Preference Optimization for Large Language Model Alignment', arXiv 2410.06293."
    tau_rule = "zero"
    forms = ("regression", "logistic", "pg")
    estimator = "opponent"
    uses_previous = True
    alpha: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= float(self.alpha) < 1.0:
            raise ValueError(f"apo: alpha (the momentum) must be in [0, 1), got {self.alpha!r}.")

    def init_memory(self, logp0, logmu):
        return {"prev": logp0}

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        cur = Opponent("current", 1.0 + self.alpha, state.logp)
        if self.alpha == 0:
            return (cur,)
        return (cur, Opponent("previous", -self.alpha, state.memory["prev"]))

    def target(self, state: State, signal, phase: int = 0):
        anchor = extrapolated_anchor(state.logp, state.memory["prev"], self.alpha)
        return _blocks.mirror_step(anchor, self.step_size(state.t), signal)

    def next_memory(self, state: State, logp_new):
        return {"prev": state.logp}

    def loss_anchor(self, inputs: LossInputs):
        if inputs.logp_previous is None:
            raise ValueError("apo: the loss needs LossInputs.logp_previous (log pi_{t-1} of each response).")
        return extrapolated_anchor(inputs.logp_anchor, inputs.logp_previous, self.alpha)
