"""A softmax-table policy over ``C`` contexts and ``n`` responses, and exact (enumerated) loss inputs.

The table is the simplest neural policy: parameters are logits ``theta`` of shape ``(C, n)`` and
``pi_theta = softmax(theta)``.  :func:`exact_loss_inputs` enumerates every response (or pair) with its
probability as weight instead of sampling, so minimising ``alg.loss`` over the table must reproduce the
exact tabular step: this is how nashalign proves each neural loss equals its algorithm's update.
"""

from __future__ import annotations

from typing import Any

import torch

from nashalign import _xp
from nashalign.algorithms import _losses
from nashalign.algorithms.base import Algorithm, LossInputs, State

#: Logit given to zero-probability responses when a table is initialised from log-probabilities.
FLOOR_LOGIT = -60.0


class SoftmaxTable(torch.nn.Module):
    """``pi_theta(y | x) = softmax(theta[x])(y)`` with trainable logits ``theta`` ``(C, n)``."""

    def __init__(self, logits: Any) -> None:
        super().__init__()
        t = torch.as_tensor(_xp.to_numpy(logits) if not isinstance(logits, torch.Tensor) else logits.detach())
        t = t.to(torch.promote_types(t.dtype, torch.float32)).clone()
        t = torch.where(torch.isfinite(t), t, torch.full_like(t, FLOOR_LOGIT))
        self.logits = torch.nn.Parameter(t)

    def log_probs(self) -> torch.Tensor:
        """``(C, n)`` log-probabilities."""
        return torch.log_softmax(self.logits, dim=-1)

    def reset(self, logp: Any) -> None:
        """Set the table to the log-policy ``logp`` (``-inf`` entries become :data:`FLOOR_LOGIT`)."""
        t = torch.as_tensor(_xp.to_numpy(logp) if not isinstance(logp, torch.Tensor) else logp.detach())
        t = t.to(self.logits.dtype).to(self.logits.device)
        with torch.no_grad():
            self.logits.copy_(torch.where(torch.isfinite(t), t, torch.full_like(t, FLOOR_LOGIT)))


def _t(x: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(_xp.to_numpy(x) if not isinstance(x, torch.Tensor) else x).to(like.dtype).to(like.device)


def exact_loss_inputs(
    alg: Algorithm, state: State, signal: Any, logp_theta: torch.Tensor, behavior: Any = None
) -> LossInputs:
    """Enumerate every response of every context with exact weights.

    Pairwise forms get all ``n^2`` ordered pairs per context with weights ``rho(y) rho(y')``; per-response
    forms get one row of ``n`` responses per context with weights ``rho(y)``.  ``rho`` is the behaviour
    policy (default ``pi_t``, which must have full support for the minimiser to be unique).

    Args:
        alg: the algorithm (its ``form`` decides the row layout).
        state: the state at the start of the phase (``logp`` = ``pi_t``, ``logmu`` = ``mu``).
        signal: ``(C, n)`` exact signal ``sum_j c_j P(. > q_j)``.
        logp_theta: ``(C, n)`` log-probabilities of the table being trained (carries the gradient).
        behavior: ``(C, n)`` log-probabilities of ``rho`` (default ``state.logp``).
    """
    C, n = logp_theta.shape
    anchor = _t(state.logp, logp_theta)  # (C, n)
    ref = _t(state.logmu, logp_theta)
    sig = _t(signal, logp_theta)
    rho = anchor if behavior is None else _t(behavior, logp_theta)
    prev = _t(state.memory["prev"], logp_theta) if getattr(alg, "uses_previous", False) else None
    form = getattr(alg, "form", "regression")
    if form in _losses.PAIR_FORMS:
        ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)  # (n^2,)

        def pairs(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[:, ii], x[:, jj]], -1).reshape(-1, 2)  # (C n^2, 2)

        w = (torch.exp(rho[:, ii] + rho[:, jj])).reshape(-1)  # (C n^2,)
        prev_pairs = None if prev is None else pairs(prev)
        return LossInputs(pairs(logp_theta), pairs(anchor), pairs(ref), pairs(sig), w, pairs(rho), state.t, prev_pairs)
    return LossInputs(logp_theta, anchor, ref, sig, torch.exp(rho), rho, state.t, prev)
