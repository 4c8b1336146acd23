"""Online IPO (Calandriello et al. 2024; SPEC.md section 4): softmax policy gradient on the online IPO loss.

Loss, pairs from the current policy with stop-gradient::

    L(theta) = E_{y, y' ~ sg pi_theta} ( h_theta(y, y') - (P(y > y') - 1/2) / tau )^2,
    h_theta(y, y') = log[pi_theta(y)/mu(y)] - log[pi_theta(y')/mu(y')].

Its stationary point is the regularised equilibrium ``pi*_tau`` (the self-play view of IPO).  Unlike the
mirror rules, the tabular algorithm is one *gradient step* on the logits with learning rate ``eta``::

    theta_{t+1} = theta_t - eta * 4 pi_t ⊙ ( e - E_{pi_t} e ),   e = log(pi_t/mu) - P(. > pi_t)/tau,

the exact population gradient of ``L`` (derived in SPEC.md §4 and checked against autograd in the tests),
so the lift is "one SGD step on the loss with exact weights equals the update" (``lift = "gradient_step"``).
It stalls for small ``tau`` (softmax-PG dynamics; SPEC.md 12(c)).

Reference: D. Calandriello, D. Guo, R. Munos, et al., "Human Alignment of Large Language Models through
Online Preference Optimisation", arXiv 2403.08635 (ICML 2024), eq. (8).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign import _xp
from nashalign.algorithms import _losses
from nashalign.algorithms.base import (
    Algorithm,
    LossInputs,
    LossOutput,
    Opponent,
    State,
    current,
    without_zero_weight_terms,
)
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class OnlineIPO(Algorithm):
    """Online IPO as softmax policy gradient on logits (learning rate ``eta``; needs ``tau > 0``)."""

    name = "online_ipo"
    reference = "Calandriello et al., 'Human Alignment of LLMs through Online Preference Optimisation', arXiv 2403.08635."
    tau_rule = "positive"
    lift = "gradient_step"
    estimator = "pair"

    def init(self, logp0, logmu) -> State:
        return State(0, logp0, logmu, {})

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)

    def update(self, state: State, signal, phase: int = 0) -> State:
        pi = _xp.exp(state.logp)  # (C, n)
        support = pi > 0
        zero = _xp.zeros_like(pi)
        e = _xp.where(support, state.logp - state.logmu - signal / self.tau, zero)  # (C, n)
        centered = e - _xp.asum(pi * e, axis=-1)[..., None]
        grad = 4.0 * pi * centered  # (C, n): dL/dtheta at theta = log pi_t
        theta = state.logp - self.step_size(state.t) * grad
        return self.accept(state, _xp.log_normalize(theta), phase)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        return State(state.t + 1, logp_new, state.logmu, {})

    def loss_anchor(self, inputs: LossInputs):
        return inputs.logp_ref

    def loss(self, inputs: LossInputs) -> LossOutput:
        inputs = without_zero_weight_terms(inputs)
        out = _losses.regression(inputs.logp, inputs.logp_ref, inputs.signal, 1.0 / self.tau, inputs.weights)
        loss = out.pop("loss")
        return LossOutput(loss, {"loss": loss.detach(), **{k: v.detach() for k, v in out.items()}})
