"""XPO: Exploratory Preference Optimization (Xie et al. 2024); SPEC.md section 19.

XPO is online DPO plus an optimism (exploration) bonus.  Per iteration a pair ``(y, y~)`` is drawn, labelled
by the preference oracle (``l = 1{y > y~}``), and the next policy minimises the DPO-type loss plus
``alpha log pi(y~)`` (TRL's ``XPOTrainer._compute_losses``: ``dpo_losses + alpha * model_logprobs_ref_data``;
the bonus lowers the probability of what was sampled, moving mass to responses not yet covered).
nashalign implements TRL's ``loss_type="ipo"``::

    L(pi) = E[ (h (2l - 1) - 1/(2 tau))^2 ] + alpha E[ log pi(y~) ],   h = log[pi(y)/mu(y)] - log[pi(y~)/mu(y~)],

(``tau = beta``) and defines the exact tabular step as its *population* minimiser over a softmax table for
one iteration's exact sampling distribution: ``y, y~ ~ pi_t`` i.i.d. (the paper's general sampling policy
``pi~^(t) = pi^(t)``) and ``E[l] = P(y > y~)``.  In expectation the square term is ``(h - (P(y > y~) - 1/2)/tau)^2``
plus a constant; with logits ``theta`` and ``v = theta - log mu - P(. > pi_t)/tau``::

    L(theta) = 2 Var_{pi_t}(v) + alpha ( sum_y pi_t(y) theta_y - logsumexp(theta) ) + const,

whose stationarity condition, divided by ``pi_t(k)``, is
``4 (v_k - E_{pi_t} v) + alpha (1 - pi(k)/pi_t(k)) = 0``.  ``alpha = 0`` gives the closed form
``pi_{t+1} ∝ mu exp(P(. > pi_t)/tau)`` (online IPO's argmin: the regularised best response to ``pi_t``);
for ``alpha > 0`` :func:`xpo_step` solves it by Newton (log space, batched, support of ``pi_t``).  The
objective is bounded below (the quadratic term dominates the linear-growth bonus) and strictly convex, so
the step is unique, when ``alpha < 4 min_y pi_t(y)``; outside that range (a concentrated policy) the bonus
can create several minima and the step raises instead of picking one.

Why IPO and not TRL's default sigmoid loss: the sigmoid loss's population stationarity condition is
``sum_y' pi_t(y') sigma(tau (u_k - u_y')) = P(k > pi_t)``, whose left side is at least ``pi_t(k)/2`` (the
``y' = k`` term is ``sigma(0) = 1/2``); when ``P(k > pi_t) < pi_t(k)/2`` there is no solution and the
infimum sends ``pi(k)`` to zero, so the exact step is not a policy in the interior.

Deviations, stated: the paper accumulates all past pairs (``sum_{i <= t}``); nashalign, like TRL's online
trainer, uses the current iteration's distribution.  TRL draws ``y~`` from the reference; with ``y~ ~ mu``
the objective needs pairwise win rates ``P(y > y~)`` beyond one signal, which the one-definition contract
does not carry.  XPO has no step size: ``eta`` is accepted and unused.  Its fixed points are those of the
regularised best response (with the bonus), not the Nash equilibrium: on intransitive games it cycles
for small ``tau`` (tabular/README.md).

Reference: T. Xie, D. J. Foster, A. Krishnamurthy, C. Rosset, A. Awadallah, A. Rakhlin, "Exploratory Preference
Optimization", arXiv 2405.21046, Algorithm 1; TRL ``trl/trainer/xpo_trainer.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nashalign import _xp
from nashalign._validation import check_positive
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


def _eye(like: Any) -> Any:
    n = like.shape[-1]
    if _xp.is_torch(like):
        import torch

        return torch.eye(n, dtype=like.dtype, device=like.device)
    return np.eye(n, dtype=like.dtype)


def _solve(A: Any, b: Any) -> Any:
    if _xp.is_torch(A):
        import torch

        return torch.linalg.solve(A, b[..., None])[..., 0]
    return np.linalg.solve(A, b[..., None])[..., 0]


def _residual(theta, lpt, live, base, alpha):
    """``f = grad L / pi_t`` on the support and its Jacobian ``d f / d theta``; ``base = log mu + s/tau``."""
    zero = _xp.zeros_like(theta)
    neg = zero + float("-inf")
    pt = _xp.exp(lpt)
    v = _xp.where(live, theta - base, zero)
    vbar = (pt * v).sum(-1, keepdims=True)
    th = _xp.where(live, theta, neg)
    logpi = th - _xp.logsumexp(th, axis=-1, keepdims=True)
    ratio = _xp.exp(_xp.where(live, logpi, zero) - _xp.where(live, lpt, zero))  # pi / pi_t
    f = _xp.where(live, 4 * (v - vbar) + alpha * (1 - ratio), zero)
    eye = _eye(theta)
    jac = 4 * (eye - pt[:, None, :]) - alpha * ratio[:, :, None] * (eye - _xp.exp(logpi)[:, None, :])
    return f, jac


def xpo_step(logpt: Any, logmu: Any, s: Any, tau: float, alpha: float, max_iter: int = 100) -> Any:
    """The population minimiser of XPO's (IPO) loss (module docstring); ``(C, n)`` log-probabilities.

    Defined (unique) when ``alpha < 4 min_y pi_t(y)`` over the support: then ``alpha Var_pi(v) <=
    alpha max_y (pi/pi_t)(y) Var_pi_t(v) < 4 Var_pi_t(v)`` for every ``pi``, so the objective is strictly
    convex on logits modulo constants.  Damped Newton on ``f = grad L / pi_t = 0``.

    Raises:
        ValueError: ``alpha >= 4 min pi_t`` (the objective may have several minima), or Newton did not converge.
    """
    live = logpt > float("-inf")
    zero = _xp.zeros_like(logpt)
    neg = zero + float("-inf")
    lpt = _xp.where(live, logpt, neg)
    base = logmu + s / tau
    theta = _xp.where(live, base, zero)  # the alpha = 0 closed form
    if alpha == 0:
        return _xp.log_normalize(_xp.where(live, theta, neg))
    least = float(_xp.amin(_xp.where(live, logpt, zero + float("inf")), axis=-1).min())
    if not alpha < 4 * np.exp(least):
        raise ValueError(
            f"xpo: the exact step is defined for alpha < 4 min pi_t(y) (a convex objective); here alpha = {alpha} "
            f"and min pi_t = {np.exp(least):.3g}: the policy has concentrated and the bonus can create several "
            "minima. Lower alpha (alpha = 0 is online IPO's argmin) or raise tau."
        )
    eye = _eye(logpt)
    livef = _xp.where(live, zero + 1.0, zero)
    pin = livef[:, :, None] * _xp.exp(lpt)[:, None, :] + (1 - livef)[:, :, None] * eye  # sum_k pi_t d theta_k = 0
    f, jac = _residual(theta, lpt, live, base, alpha)
    for _ in range(max_iter):
        norm = (f * f).sum(-1)
        if float(norm.max()) < 1e-26:
            break
        step = _xp.where(live, _solve(jac + pin, -f), zero)
        lr = zero[:, :1] + 1.0
        for _ in range(50):  # backtracking on |f|^2, per context
            f_new, jac_new = _residual(theta + lr * step, lpt, live, base, alpha)
            bad = (f_new * f_new).sum(-1) > norm * (1 - 1e-4 * lr[:, 0])
            if not bool(bad.any()):
                break
            lr = _xp.where(bad[:, None], lr * 0.5, lr)
        theta = theta + lr * step
        f, jac = f_new, jac_new
    residual = float(abs(f).max())
    if not residual <= 1e-10:
        raise ValueError(f"xpo: Newton did not converge (stationarity residual {residual:.2e}); lower alpha.")
    return _xp.log_normalize(_xp.where(live, theta, neg))


@register
@dataclass(frozen=True)
class XPO(Algorithm):
    """Online IPO (``beta = tau``) with XPO's exploration bonus ``alpha E log pi(y~)``; the step is the exact argmin."""

    name = "xpo"
    reference = "Xie et al., 'Exploratory Preference Optimization', arXiv 2405.21046."
    tau_rule = "positive"
    forms = ("regression",)
    estimator = "pair"
    alpha: float = 1e-5
    form: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alpha", check_positive(self.alpha, "alpha", allow_zero=True))
        form = self.forms[0] if self.form is None else self.form
        if form not in self.forms:
            raise ValueError(f"{self.name}: unknown loss form {form!r}; choose one of {list(self.forms)}.")
        object.__setattr__(self, "form", form)

    def init(self, logp0, logmu) -> State:
        return State(0, logp0, logmu, {})

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)

    def update(self, state: State, signal, phase: int = 0) -> State:
        return self.accept(state, xpo_step(state.logp, state.logmu, signal, self.tau, self.alpha), phase)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        return State(state.t + 1, logp_new, state.logmu, {})

    def loss_anchor(self, inputs: LossInputs):
        return inputs.logp_ref

    def loss(self, inputs: LossInputs) -> LossOutput:
        """TRL's IPO loss on the pair ``(y, y~)`` plus ``alpha log pi(y~)`` (column 1 of each row is ``y~``).

        ``(h - (s(y) - s(y~))/tau)^2`` is the pairwise regression with anchor ``log mu`` and ``eta = 1/tau``; with
        the ``pair`` estimator's ``(l, 1/2)`` it is ``(h - (l - 1/2)/tau)^2``, TRL's ``(h (2l-1) - 1/(2 tau))^2``
        up to a constant.  Per-response win rates give the same population objective (it is linear in the label).
        """
        inputs = without_zero_weight_terms(inputs)
        out = _losses.regression(inputs.logp, inputs.logp_ref, inputs.signal, 1.0 / self.tau, inputs.weights)
        ipo = out.pop("loss")
        bonus = self.alpha * _losses.weighted_mean(_losses.f32(inputs.logp)[:, 1], inputs.weights)
        loss = ipo + bonus
        return LossOutput(loss, {"loss": loss.detach(), "ipo": ipo.detach(), "bonus": bonus.detach(),
                                 **{k: v.detach() for k, v in out.items()}})
