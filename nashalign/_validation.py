"""Shared input checks. Each raises ``ValueError``/``TypeError`` saying what is wrong and how to fix it."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from nashalign import _xp

Array = Any

#: Tolerance on ``P + P^T = 1`` and on ``sum(pi) = 1`` for float64 inputs; see :func:`tol_for_dtype`.
SKEW_TOL = 1e-9

#: A lower-precision dtype's tolerance is this many units of its machine epsilon (float32: 1.2e-5).
EPS_UNITS = 100


def tol_for_dtype(dtype: Any) -> float:
    """The validation tolerance of values stored in ``dtype`` (numpy or torch): one rule for both backends.

    ``max(SKEW_TOL, EPS_UNITS * eps(dtype))``: 1e-9 for float64, about 1.2e-5 for float32 (a float32 ``P`` or
    ``pi`` carries rounding errors of a few ``eps = 1.2e-7``).  Integer and bool dtypes are exact (1e-9).
    """
    if _xp.is_torch_dtype(dtype):
        import torch

        eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    else:
        dt = np.dtype(dtype)
        eps = float(np.finfo(dt).eps) if dt.kind == "f" else 0.0
    return max(SKEW_TOL, EPS_UNITS * float(eps))


def tol_for(x: Array) -> float:
    """The validation tolerance that fits the floating precision of ``x`` (see :func:`tol_for_dtype`)."""
    return tol_for_dtype(x.dtype)


def source_tol(x: Any) -> float:
    """The tolerance of the dtype ``x`` was given in, before any conversion (lists: float64)."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return SKEW_TOL
    try:
        return tol_for_dtype(dt)
    except TypeError:
        return SKEW_TOL


def as_float_array(x: Any, name: str) -> Array:
    """Accept numpy arrays, torch tensors and nested sequences of real numbers; return a float array.

    numpy/sequence inputs become float64 numpy; torch float tensors keep their dtype and device,
    integer/bool tensors become float64.  Complex, string, object and ragged inputs raise ``TypeError``.
    """
    if _xp.is_torch(x):
        import torch

        if torch.is_complex(x):
            raise TypeError(f"{name} must be real, got a complex tensor ({x.dtype}); pass x.real if that is meant.")
        if not torch.is_floating_point(x):
            x = x.to(torch.float64)
        return x
    if isinstance(x, (str, bytes)) or x is None or isinstance(x, dict):
        raise TypeError(f"{name} must be a numeric array (numpy or torch), got {type(x).__name__}.")
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as err:  # ragged nested sequences
        raise TypeError(f"{name} must be a numeric array (numpy or torch); could not convert: {err}") from err
    if raw.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got a complex array ({raw.dtype}); pass x.real if that is meant.")
    if raw.dtype.kind == "O":  # e.g. a list of 0-d tensors or Decimals: convert if every item is a real number
        try:
            raw = raw.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numeric array (numpy or torch); could not convert: {err}") from err
    if raw.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a numeric array (numpy or torch) of real numbers, got dtype {raw.dtype} "
            f"({type(x).__name__})."
        )
    return raw.astype(np.float64, copy=False)


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


def check_int(value: Any, name: str, minimum: int = 0, hint: str = "") -> int:
    """An integer ``>= minimum`` (Python/numpy ints, or floats with an integer value such as ``10.0``).

    ``2.5``, ``NaN``, ``None``, strings and bools raise ``TypeError``/``ValueError`` naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).{(' ' + hint) if hint else ''}")
    if not isinstance(value, numbers.Integral):
        v = float(value)
        if not (np.isfinite(v) and v.is_integer() and abs(v) <= 2**53):  # 2**53: floats hold every integer up to it
            hint = int(v) if np.isfinite(v) and abs(v) <= 2**53 else 10
            raise ValueError(f"{name} must be a whole number, got {value!r}; pass an int such as {hint}.")
        value = int(v)
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.{(' ' + hint) if hint else ''}")
    return int(value)


#: Largest seed accepted (``torch.Generator.manual_seed`` takes int64; the sampled mode also uses ``seed + 1``).
SEED_MAX = 2**63 - 2


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """None, or an integer in ``[0, SEED_MAX]``."""
    if seed is None:
        return None
    s = check_int(seed, name, 0)
    if s > SEED_MAX:
        raise ValueError(f"{name} must be <= 2**63 - 2 (a torch generator seed), got {seed!r}.")
    return s


def check_bool(value: Any, name: str) -> bool:
    """A bool (Python or numpy); anything else raises ``TypeError`` (an array's truth value is ambiguous)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r:.60} ({type(value).__name__}).")
    return bool(value)


def check_step_size(value: Any, t: int, name: str = "eta") -> float:
    """A schedule's value ``eta(t)``: a finite real ``> 0`` (the rule a constant ``eta`` obeys)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"the schedule {name} returned {value!r} ({type(value).__name__}) at t={t}; a schedule must return a "
            "real number eta_t > 0."
        )
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"the schedule {name} returned {name}_{t} = {value!r}; every step size must be finite and > 0.")
    return v


#: Smallest positive KL strength: below it ``P/tau`` (and its square in the equilibrium programs) overflows float64.
TAU_FLOOR = 1e-150


def check_tau(tau: Any, name: str = "tau") -> float:
    """A KL strength: ``0`` (unregularised) or a finite real ``>= TAU_FLOOR``."""
    t = check_positive(tau, name, allow_zero=True)
    if 0 < t < TAU_FLOOR:
        raise ValueError(
            f"{name}={tau!r} is below {TAU_FLOOR:g}, where P/{name} overflows float64; pass {name}=0 for the "
            "unregularised game."
        )
    return t


def check_policy(policy: Any, num_contexts: int, num_responses: int, like: Array, name: str = "policy") -> Array:
    """Validate a policy given as probabilities, ``(n,)`` or ``(C, n)``; return it as ``(C, n)``.

    The result lives in the array library, dtype and device of ``like``.
    """
    tol = max(source_tol(policy), tol_for_dtype(like.dtype)) * max(1, num_responses) ** 0.5 * 10
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
    if (pin < -tol).any():
        raise ValueError(f"{name} has negative entries (min {pin.min():.3g}): probabilities must be >= 0.")
    with np.errstate(over="ignore"):  # finite entries near the float maximum: the sum overflows, and fails below
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
