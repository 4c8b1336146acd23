"""Array-namespace shim: the few operations the exact steps and metrics need, for numpy and torch.

Every exact update in :mod:`nashalign.algorithms` and every metric in :mod:`nashalign.metrics` is
written once against the functions below; they dispatch on the type of their first array
argument, so one definition serves numpy float64 and torch (CPU or CUDA, float32 or float64).

Conventions: policies are *normalised log-probabilities* of shape ``(C, n)``; ``-inf`` marks a
zero-probability response, and every normaliser here is safe when some (not all) entries are
``-inf``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp as _np_logsumexp

try:  # torch is a hard dependency of the package, but keep the shim importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

Array = Any  # numpy.ndarray | torch.Tensor


def is_torch(x: Array) -> bool:
    """True when ``x`` is a torch tensor."""
    return torch is not None and isinstance(x, torch.Tensor)


def is_torch_dtype(dt: Any) -> bool:
    """True when ``dt`` is a ``torch.dtype``."""
    return torch is not None and isinstance(dt, torch.dtype)


def logsumexp(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
    """``log sum exp`` along ``axis``; ``-inf`` entries contribute zero."""
    if is_torch(x):
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim > 0 and x.shape[axis] > 0):
        return _np_logsumexp(x, axis=axis, keepdims=keepdims)  # scalars, ints, complex, empty axes
    m = x.max(axis=axis, keepdims=True)
    fin = np.isfinite(m)
    if fin.all():
        # Fast path: every x - m <= 0 (or -inf), and the maximum contributes exp(0) = 1, so the sum is
        # >= 1 and neither exp nor log can warn (no np.errstate, which costs microseconds per call).
        out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    else:
        m = np.where(fin, m, 0.0)  # an all -inf row gives -inf, a +inf entry gives +inf, NaN stays NaN
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    out += m
    return out if keepdims else np.squeeze(out, axis=axis)


def log_normalize(z: Array) -> Array:
    """``z - logsumexp(z)`` over the last axis: unnormalised logits to log-probabilities."""
    return z - logsumexp(z, axis=-1, keepdims=True)


def exp(x: Array) -> Array:
    return torch.exp(x) if is_torch(x) else np.exp(x)


def expm1(x: Array) -> Array:
    """``exp(x) - 1``, accurate for small ``x``."""
    return torch.expm1(x) if is_torch(x) else np.expm1(x)


def log(x: Array) -> Array:
    """Elementwise log, with ``log 0 = -inf`` and no warning."""
    if is_torch(x):
        return torch.log(x)
    with np.errstate(divide="ignore"):
        return np.log(x)


def _mixed(P: Array, v: Array) -> tuple[Array, Any]:
    """``v`` in ``P``'s dtype, and the dtype of the result: the promotion of both (see :func:`matvec`)."""
    if is_torch(P):
        return v.to(P.dtype), torch.promote_types(P.dtype, v.dtype)
    return v.astype(P.dtype), np.promote_types(P.dtype, v.dtype)


def matvec(P: Array, v: Array) -> Array:
    """Batched matrix-vector product: ``(C, n, m) @ (C, m) -> (C, n)``, ``(P v)_i = sum_j P_ij v_j``.

    Mixed precision: when ``P`` is stored in another floating dtype than ``v`` (a float32 ``P`` with float64
    policies), ``v`` is rounded to ``P``'s dtype, BLAS forms and sums the products in that dtype, and the
    result comes back in the promoted dtype (float64): only ``(C, n)`` vectors are converted, never ``P``.
    A float32 product carries a relative error of about ``sqrt(m) * 6e-8``.
    """
    if P.dtype != v.dtype:
        vv, out = _mixed(P, v)
        return matvec(P, vv).to(out) if is_torch(P) else matvec(P, vv).astype(out)
    if is_torch(P):
        return torch.matmul(P, v.unsqueeze(-1)).squeeze(-1)
    return np.matmul(P, v[..., None])[..., 0]


def rmatvec(P: Array, v: Array) -> Array:
    """Batched ``v^T P``: ``(C, m) , (C, m, n) -> (C, n)``; mixed dtypes as in :func:`matvec`."""
    if P.dtype != v.dtype:
        vv, out = _mixed(P, v)
        return rmatvec(P, vv).to(out) if is_torch(P) else rmatvec(P, vv).astype(out)
    if is_torch(P):
        return torch.matmul(v.unsqueeze(-2), P).squeeze(-2)
    return np.matmul(v[..., None, :], P)[..., 0, :]


def amax(x: Array, axis: int = -1) -> Array:
    if is_torch(x):
        return torch.amax(x, dim=axis)
    return np.max(x, axis=axis)


def amin(x: Array, axis: int = -1) -> Array:
    if is_torch(x):
        return torch.amin(x, dim=axis)
    return np.min(x, axis=axis)


def asum(x: Array, axis: int = -1) -> Array:
    if is_torch(x):
        return torch.sum(x, dim=axis)
    return np.sum(x, axis=axis)


def xlogy_diff(p: Array, logp: Array, logq: Array) -> Array:
    """``sum_y p(y) (log p(y) - log q(y))`` over the last axis with ``0 log 0 = 0``.

    Returns ``+inf`` where ``p(y) > 0`` and ``q(y) = 0``.
    """
    if is_torch(p):
        diff = torch.where(p > 0, logp - logq, torch.zeros_like(p))
        return torch.sum(p * diff, dim=-1)
    with np.errstate(invalid="ignore"):
        diff = np.where(p > 0, logp - logq, 0.0)
    return np.sum(p * diff, axis=-1)


def all_finite(x: Array) -> bool:
    """True when no entry is NaN or +-inf."""
    if is_torch(x):
        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


def no_nan(x: Array) -> bool:
    if is_torch(x):
        return not bool(torch.isnan(x).any())
    return not bool(np.isnan(x).any())


def to_numpy(x: Array) -> np.ndarray:
    """Detached float numpy copy (float64 unless the input is lower precision)."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def like(x: Array, ref: Array) -> Array:
    """Convert ``x`` to the array library, dtype and device of ``ref``."""
    if is_torch(ref):
        if is_torch(x):
            return x.to(dtype=ref.dtype, device=ref.device)
        return torch.as_tensor(np.asarray(x), dtype=ref.dtype, device=ref.device)
    return np.asarray(to_numpy(x), dtype=ref.dtype)


def copy(x: Array) -> Array:
    return x.clone() if is_torch(x) else np.array(x, copy=True)


def zeros_like(x: Array) -> Array:
    return torch.zeros_like(x) if is_torch(x) else np.zeros_like(x)


def where(cond: Array, a: Array, b: Array) -> Array:
    return torch.where(cond, a, b) if is_torch(cond) else np.where(cond, a, b)


def concat(xs: list[Array], axis: int = 0) -> Array:
    """Join arrays of one library along ``axis`` (``np.concatenate`` / ``torch.cat``)."""
    return torch.cat(list(xs), dim=axis) if is_torch(xs[0]) else np.concatenate(xs, axis=axis)
