"""Torch loss forms that lift the mirror rule (M) of :mod:`._blocks` to any policy.

Each form takes log-probabilities of sampled (or enumerated) responses and is built so that, over a
softmax table with exact weights, its minimiser is exactly the tabular step
``log pi_{t+1} = normalize(a_t + eta s_t)``: the shift-invariant *pairwise* forms (regression, logistic)
cancel the normaliser, the policy-gradient form is the proximal objective itself (estimated on samples
with a per-sample KL term that stays non-negative and a leave-one-out baseline).  Inputs are ``(B, K)``:
``K = 2`` responses per row for pairwise forms, any ``K`` for per-response forms.  Log-probabilities are
promoted to at least float32 (bf16 inputs are accumulated in float32).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def f32(x: Tensor) -> Tensor:
    """Promote to at least float32 (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def weighted_mean(x: Tensor, weights: Tensor | None) -> Tensor:
    """``sum_b w_b x_b / sum_b w_b`` (plain mean when ``weights`` is None)."""
    if weights is None:
        return x.mean()
    w = f32(weights).to(x.dtype)
    return (w * x).sum() / w.sum().clamp_min(torch.finfo(x.dtype).tiny)


def _pair_diff(x: Tensor, name: str) -> Tensor:
    if x.ndim != 2 or x.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, 2) (one pair of responses per row), got {tuple(x.shape)}.")
    return x[:, 0] - x[:, 1]


def regression(logp: Tensor, anchor: Tensor, signal: Tensor, eta: float, weights: Tensor | None) -> dict[str, Any]:
    """Pairwise square loss ``E_w ( h(y, y') - eta (s(y) - s(y')) )^2`` with ``h = [log pi - a](y) - [log pi - a](y')``.

    Minimiser over a table (pairs covering every ``(y, y')``): ``log pi = a + eta s + c`` (rule M).  This is
    INPO's loss (anchor ``r log mu + (1-r) log pi_t``, soft label ``s = (P(y > y'), 1/2)``), EGPO's loss
    (``eta = 1/tau``: anchor ``log mu``, target ``(P(y > y'') - P(y' > y''))/tau``) and online IPO's.
    """
    u = f32(logp) - f32(anchor)  # (B, 2)
    h = _pair_diff(u, "logp")  # (B,)
    target = eta * _pair_diff(f32(signal), "signal")  # (B,)
    res = h - target
    return {"loss": weighted_mean(res.square(), weights), "residual_rms": weighted_mean(res.square(), weights).sqrt()}


def logistic(logp: Tensor, anchor: Tensor, signal: Tensor, eta: float, weights: Tensor | None) -> dict[str, Any]:
    """Soft-label logistic loss of DNO (Rosset et al. 2024, Alg. 1):

    ``-E_w [ sigma(ds) log sigma(h/eta) + sigma(-ds) log sigma(-h/eta) ]``, ``ds = s(y) - s(y')``.
    Per pair the minimiser is ``h/eta = ds``, hence the same table minimiser as :func:`regression`.
    """
    u = f32(logp) - f32(anchor)
    z = _pair_diff(u, "logp") / eta  # (B,)
    ds = _pair_diff(f32(signal), "signal")
    q = torch.sigmoid(ds)
    ce = q * F.softplus(-z) + (1 - q) * F.softplus(z)
    ent = -(q * torch.log(q) + (1 - q) * torch.log1p(-q))  # the minimum of ce: reported as excess loss
    return {"loss": weighted_mean(ce, weights), "excess": weighted_mean(ce - ent, weights)}


def _leave_one_out_mean(x: Tensor) -> Tensor:
    """``c_i = mean_{j != i} x_j`` along the last dimension (``K >= 2``)."""
    K = x.shape[-1]
    return (x.sum(-1, keepdim=True) - x) / (K - 1)


def policy_gradient(
    logp: Tensor,
    anchor: Tensor,
    signal: Tensor,
    eta: float,
    weights: Tensor | None,
    logp_behavior: Tensor,
    max_log_ratio: float = 20.0,
) -> dict[str, Any]:
    """Proximal policy-gradient objective with importance weights (SPO, Nash-MD-PG).

    The population objective is the KL-proximal one whose minimiser is rule M::

        E_{y ~ pi}[log pi - a - eta s] = KL(pi || b) + E_{y ~ pi}[g],   g = log b - a - eta s,

    with the behaviour policy ``b`` (``pi_t``) that drew the responses.  Each response ``y_i ~ b``
    contributes, with ``rho = pi/b`` and a per-row baseline ``c_i`` (no gradient)::

        l_i = rho_i log rho_i - rho_i + 1 + rho_i (g_i - c_i).

    * ``rho log rho - rho + 1 >= 0`` is the per-sample estimate of ``KL(pi || b)`` that stays a divergence
      on a sample (its ``-rho + 1`` has mean zero under ``b``).  Without it (``rho (log pi - a - eta s)``)
      every sample's own minimiser is ``rho = exp(eta s - 1) < 1``: the objective shrinks the probability
      of every sampled response, which on a language model hands the mass to strings nobody sampled.
      Here the per-sample minimiser is ``log pi(y_i) = a(y_i) + eta s(y_i) + c_i``: the step itself, with
      the baseline in place of the normaliser.
    * ``c_i`` is the leave-one-out mean of ``g`` over the other responses of the row (the ``K`` samples of one
      prompt), so it does not depend on ``y_i`` and the gradient stays unbiased (``E_b[rho grad log pi] =
      grad sum_y pi(y) = 0``).  At ``pi = b`` the gradient is the centred REINFORCE estimate
      ``-eta (s(y_i) - tau log(pi_t/mu)(y_i) - baseline) grad log pi(y_i)`` of Nash-MD-PG (SPEC.md 3.2).
      With SPO's self-play win rates (self-comparison 1/2 included) ``s_i - mean_{j != i} s_j`` is exactly
      ``(1/(K-1)) sum_{j != i} (P(y_i > y_j) - 1/2)``: SPO's win-proportion reward, centred at 1/2 (SPEC.md 6).
    * With per-response ``weights`` of shape ``(B, K)`` (exact enumeration, ``w = b``) there is no baseline and
      ``sum_y w (1 - rho) = 0``, so the value is exactly the proximal objective (table minimiser = rule M).
      With ``K = 1`` there is no baseline either.

    Log-ratios above ``max_log_ratio`` are clamped inside ``rho`` (reported as ``clamped_frac``) so
    sequence-level ratios cannot overflow.
    """
    lp = f32(logp)
    beh = f32(logp_behavior)
    log_ratio = lp - beh
    clamped = log_ratio.detach() > max_log_ratio
    rho = torch.exp(torch.clamp(log_ratio, max=max_log_ratio))
    g = (beh - f32(anchor) - eta * f32(signal)).detach()  # (B, K): the per-response reward term, no grad
    exact = weights is not None and weights.ndim == 2
    if not exact and g.shape[-1] >= 2:
        g = g - _leave_one_out_mean(g)
    obj = rho * (log_ratio + g) - rho + 1.0  # (B, K)
    if weights is None:
        w = None
    else:  # (B,) row weights or (B, K) per-response weights (exact enumeration)
        w = (weights if weights.ndim == 2 else weights.unsqueeze(-1)).expand_as(obj).reshape(-1)
    return {
        "loss": weighted_mean(obj.reshape(-1), w),
        "clamped_frac": clamped.to(lp.dtype).mean(),
        "advantage_rms": g.square().mean().sqrt() / eta,
    }


def sppo_square(logp: Tensor, anchor: Tensor, signal: Tensor, eta: float, weights: Tensor | None) -> dict[str, Any]:
    """SPPO's per-response square loss (Wu et al. 2024, sppo/trainer.py ``loss_type="sppo"``):

    ``1/2 sum_k ( log pi(y_k)/pi_t(y_k) - eta (Phat(y_k > pi_t) - 1/2) )^2``.  It approximates ``log Z_t`` by
    ``eta/2``, so its minimiser is close to, not equal to, the MWU step (SPEC.md section 11, note 6).
    """
    res = f32(logp) - f32(anchor) - eta * (f32(signal) - 0.5)  # (B, K)
    return {"loss": weighted_mean(0.5 * res.square().sum(-1), weights)}


def contrastive(
    logp: Tensor, anchor: Tensor, signal: Tensor, eta: float, weights: Tensor | None, margin: float = 0.0
) -> dict[str, Any]:
    """DNO-Prct's DPO loss with the previous iterate as reference (Rosset et al. 2024, Alg. 2):

    ``-log sigma( (1/eta) [log pi(y+)/pi_t(y+) - log pi(y-)/pi_t(y-)] )`` over pairs whose signal margin
    ``|s(y) - s(y')|`` exceeds ``margin``; ``y+`` is the response with the larger signal.  A heuristic
    (hard labels, margin filtering): its minimiser is not the MWU step.
    """
    u = f32(logp) - f32(anchor)
    h = _pair_diff(u, "logp")
    ds = _pair_diff(f32(signal), "signal")
    keep = (ds.abs() > margin).to(h.dtype)
    loss = F.softplus(-torch.sign(ds) * h / eta) * keep
    w = keep if weights is None else keep * f32(weights).to(h.dtype)
    return {"loss": weighted_mean(loss, w), "kept_frac": keep.mean()}


FORMS = {
    "regression": regression,
    "logistic": logistic,
    "pg": policy_gradient,
    "sppo": sppo_square,
    "contrastive": contrastive,
}
#: Forms whose table minimiser is exactly the mirror step (the others are the papers' heuristics).
EXACT_FORMS = ("regression", "logistic", "pg")
#: Forms that read pairs ``(B, 2)``; the others read any number ``K`` of responses per row.
PAIR_FORMS = ("regression", "logistic", "contrastive")
