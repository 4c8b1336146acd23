"""Shared input checks. Each raises ``ValueError``/``TypeError`` saying what is wrong and how to fix it."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from nashalign import _xp

Array = Any

#: Tolerance on ``P + P^T = 1`` and on ``sum(pi) = 1`` for float64 inputs (float32 inputs get 1e-5).
SKEW_TOL = 1e-9


def tol_for(x: Array) -> float:
    """The validation tolerance that fits the floating precision of ``x``."""
    dt = x.dtype
    if _xp.is_torch(x):
        import torch

        return SKEW_TOL if dt == torch.float64 else 1e-5
    return SKEW_TOL if dt == np.float64 else 1e-5


def as_float_array(x: Any, name: str) -> Array:
    """Accept numpy arrays, torch tensors and nested sequences; return a float array.

    numpy/sequence inputs become float64 numpy; torch float tensors keep their dtype and device,
    integer/bool tensors become float64.
    """
    if _xp.is_torch(x):
        import torch

        if not torch.is_floating_point(x):
            x = x.to(torch.float64)
        return x
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a numeric array (numpy or torch), got {type(x).__name__}.")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a numeric array (numpy or torch); could not convert: {err}") from err
    return arr


def check_finite(x: Array, name: str) -> None:
    if not _xp.all_finite(x):
        bad = np.argwhere(~np.isfinite(_xp.to_numpy(x)))[:3].tolist()  # indices within the checked block
        raise ValueError(
            f"{name} has non-finite values (NaN or inf) at indices {bad}: replace them with "
            "probabilities in [0, 1]."
        )


def check_positive(value: Any, name: str, *, allow_zero: bool = False, hint: str = "") -> float:
    """A real scalar ``> 0`` (or ``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {need}, got {value!r}.{(' ' + hint) if hint else ''}")
    return v


def check_policy(policy: Any, num_contexts: int, num_responses: int, like: Array, name: str = "policy") -> Array:
    """Validate a policy given as probabilities, ``(n,)`` or ``(C, n)``; return it as ``(C, n)``.

    The result lives in the array library, dtype and device of ``like``.
    """
    pi = as_float_array(policy, name)
    given = tuple(pi.shape)
    if pi.ndim == 1:
        pi = pi[None, :]
        if num_contexts != 1:
            pi = _broadcast_rows(pi, num_contexts)
    if pi.ndim != 2 or pi.shape[-1] != num_responses or pi.shape[0] != num_contexts:
        raise ValueError(
            f"{name} has shape {given}, expected ({num_responses},) or "
            f"({num_contexts}, {num_responses}): one probability per response (and per context)."
        )
    pi = _xp.like(pi, like)
    check_finite(pi, name)
    pin = _xp.to_numpy(pi)
    tol = max(tol_for(pi), 1e-9) * max(1, num_responses) ** 0.5 * 10
    if (pin < -tol).any():
        raise ValueError(f"{name} has negative entries (min {pin.min():.3g}): probabilities must be >= 0.")
    sums = pin.sum(-1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > tol:
        raise ValueError(
            f"{name} must sum to 1 over responses; row {worst} sums to {sums[worst]:.12g}. "
            "Normalise it (pi / pi.sum(-1, keepdims=True))."
        )
    if _xp.is_torch(pi):
        pi = pi.clamp_min(0)
    else:
        pi = np.clip(pi, 0.0, None)
    return pi


def _broadcast_rows(pi: Array, c: int) -> Array:
    if _xp.is_torch(pi):
        return pi.expand(c, -1).contiguous()
    return np.broadcast_to(pi, (c, pi.shape[-1])).copy()
