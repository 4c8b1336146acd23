"""The preference game: contexts, responses and ``P(y > y' | x)``.

SPEC.md section 0: ``P[x, y, y'] = P(y > y' | x)`` with ``P + P^T = 1`` (so ``diag(P) = 1/2``); the skew
part ``A = P - 1/2`` is antisymmetric.  A game holds ``C`` contexts of ``n`` responses each and a
reference policy ``mu`` (uniform unless given).  Preferences may be intransitive (cyclic): no reward
model represents them, yet a Nash equilibrium (the minimax winner) always exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nashalign import _validation as V
from nashalign import _xp

Array = Any


#: Contexts are validated in chunks of about this many entries, so a (1000, 1000, 1000) game needs no
#: full-size temporaries (and a CUDA game is checked on its device, without a host copy).
_CHUNK_ENTRIES = 1 << 24


def _check_preferences(P: Array, tol: float) -> None:
    """Finite, in ``[0, 1]``, and ``P + P^T = 1`` (diagonal 1/2), to ``tol``; chunked over contexts."""
    C, n, _ = P.shape
    step = max(1, _CHUNK_ENTRIES // max(n * n, 1))
    for c0 in range(0, C, step):
        blk = P[c0 : c0 + step]  # (c, n, n), a view
        V.check_finite(blk, "P")
        lo, hi = float(_xp.amin(blk.reshape(-1))), float(_xp.amax(blk.reshape(-1)))
        if lo < -tol or hi > 1 + tol:
            raise ValueError(
                f"P must hold probabilities in [0, 1]; found values in [{lo:.6g}, {hi:.6g}]. "
                "If you have scores or logits, map them through a sigmoid (games.bradley_terry) first."
            )
        dev = abs(blk + blk.transpose(-1, -2) - 1.0) if _xp.is_torch(blk) else np.abs(
            blk + np.swapaxes(blk, -1, -2) - 1.0
        )
        if float(_xp.amax(dev.reshape(-1))) > tol:
            devn = _xp.to_numpy(dev)
            c, i, j = np.unravel_index(int(np.argmax(devn)), devn.shape)
            Pn = _xp.to_numpy(blk)
            raise ValueError(
                f"P + P^T must equal 1 (tolerance {tol:g}): context {c0 + c}, P[{i},{j}] + P[{j},{i}] = "
                f"{Pn[c, i, j] + Pn[c, j, i]:.12g}, and the diagonal must be 1/2. Symmetrise with "
                "P = (P + 1 - P.T) / 2 if your preferences carry a position bias."
            )


def _np_dtype(dtype: Any, name: str) -> np.dtype:
    """``np.dtype(dtype)``, or a ``TypeError`` naming the argument (e.g. a torch dtype with ``backend='numpy'``)."""
    try:
        return np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError) as err:  # numpy parses strings: ',' raises SyntaxError
        raise TypeError(
            f"{name} must be a numpy floating dtype with backend='numpy' (np.float32 or np.float64), got {dtype!r}; "
            "pass backend='torch' for torch dtypes."
        ) from err


def _torch_device(device: Any) -> Any:
    """``device`` as a ``torch.device`` that exists on this machine (None stays None)."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}: {err}") from err
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s); pass device='cpu'.")
    return dev


class PreferenceGame:
    """A batch of ``C`` symmetric constant-sum preference games over ``n`` responses.

    Args:
        P: preference tensor, ``(n, n)`` for one context or ``(C, n, n)``; numpy or torch.
            ``P[x, y, y'] = P(y > y' | x)`` must satisfy ``P + P^T = 1`` and lie in ``[0, 1]``, to the
            tolerance of the dtype it is given in (1e-9 for float64, 100 eps = 1.2e-5 for float32, numpy or torch).
        ref: reference policy ``mu``: ``(n,)`` (shared by all contexts) or ``(C, n)``, probabilities with
            full support... or zero entries, which the regularised game then never plays. Uniform when
            omitted.

    Raises:
        TypeError: ``P`` or ``ref`` is not numeric.
        ValueError: wrong shape, non-finite values, values outside ``[0, 1]``, ``P + P^T != 1``, or a
            ``ref`` that is negative or does not sum to 1.

    Examples:
        >>> import numpy as np
        >>> from nashalign import PreferenceGame, games
        >>> g = games.rock_paper_scissors()
        >>> g.num_contexts, g.num_responses
        (1, 3)
        >>> g.win_rates(np.array([1.0, 0.0, 0.0])).round(2).tolist()   # P(y > rock)
        [0.5, 1.0, 0.0]
    """

    def __init__(self, P: Any, ref: Any = None) -> None:
        tol = V.source_tol(P)  # the precision P was given in (a float32 numpy P is checked like a float32 tensor)
        P = V.as_float_array(P, "P")
        tol = max(tol, V.tol_for(P))
        if P.ndim not in (2, 3):
            raise ValueError(
                f"P must have shape (n, n) for one context or (C, n, n) for C contexts; got {tuple(P.shape)}."
            )
        self._squeeze = P.ndim == 2
        if self._squeeze:
            P = P[None]
        C, n, m = P.shape
        if n != m:
            raise ValueError(
                f"P must be square over responses: got {n} x {m}. P[y, y'] = P(y > y') needs one row and "
                "one column per response."
            )
        if n < 1:
            raise ValueError("P needs at least one response.")
        if C < 1:
            raise ValueError(f"P has shape {tuple(P.shape)}: zero contexts. Pass at least one (n, n) matrix.")
        _check_preferences(P, tol)
        self.P: Array = P  # (C, n, n)
        if ref is None:
            ref_arr = np.full((C, n), 1.0 / n)
            self.ref: Array = _xp.like(ref_arr, P)
        else:
            self.ref = V.check_policy(ref, C, n, like=P, name="ref")
        self.log_ref: Array = _xp.log(self.ref)  # (C, n), -inf where mu = 0

    # ------------------------------------------------------------------ shape
    @property
    def num_contexts(self) -> int:
        """``C``, the number of contexts (prompts)."""
        return int(self.P.shape[0])

    @property
    def num_responses(self) -> int:
        """``n``, the number of responses per context."""
        return int(self.P.shape[-1])

    @property
    def squeezed(self) -> bool:
        """True when the game was built from a single ``(n, n)`` matrix (results come back as ``(n,)``)."""
        return self._squeeze

    @property
    def is_torch(self) -> bool:
        return _xp.is_torch(self.P)

    @property
    def A(self) -> Array:
        """The skew part ``A = P - 1/2``, ``(C, n, n)``."""
        return self.P - 0.5

    def __repr__(self) -> str:
        lib = "torch" if self.is_torch else "numpy"
        dt = f"{self.P.dtype}" if self.P.dtype == self.ref.dtype else f"P {self.P.dtype}, policies {self.ref.dtype}"
        return f"PreferenceGame(C={self.num_contexts}, n={self.num_responses}, {lib} {dt})"

    # ---------------------------------------------------------------- helpers
    def policy(self, policy: Any, name: str = "policy") -> Array:
        """Validate probabilities ``(n,)`` or ``(C, n)`` and return them as ``(C, n)`` like ``ref`` (the
        library, device and dtype of ``P``, or the policies' dtype of a mixed-precision game, see :meth:`to`)."""
        return V.check_policy(policy, self.num_contexts, self.num_responses, like=self.ref, name=name)

    def unbatch(self, x: Array) -> Array:
        """Drop the context axis for games built from one ``(n, n)`` matrix."""
        return x[0] if self._squeeze else x

    def with_ref(self, ref: Any) -> PreferenceGame:
        """The same preferences with another reference policy ``mu``."""
        g = PreferenceGame.__new__(PreferenceGame)
        g.__dict__.update(self.__dict__)
        g.ref = V.check_policy(ref, self.num_contexts, self.num_responses, like=self.ref, name="ref")
        g.log_ref = _xp.log(g.ref)
        return g

    def to(self, backend: str = "numpy", device: Any = None, dtype: Any = None, p_dtype: Any = None) -> PreferenceGame:
        """The game on ``backend`` (``"numpy"`` or ``"torch"``), optionally a torch ``device``/``dtype``.

        ``dtype`` (default float64) is that of ``mu`` and of every policy and result.  ``p_dtype`` (default
        ``dtype``) stores ``P`` alone in another dtype: a *mixed-precision* game with a float32 ``P`` and float64
        policies reads half the bytes per win-rate product ``P pi`` (formed and summed in float32, see
        :func:`nashalign._xp.matvec`; relative error ~``sqrt(n) * 6e-8``) while log-policies, updates and
        metrics stay float64.  A torch game moves with ``Tensor.to`` (device to device, no host round trip)
        and stays on its device when ``device`` is None; a numpy game goes to ``device`` (default CPU).
        Arrays already of the requested library, dtype and device are shared, not copied (games are never
        modified in place).

        Raises:
            ValueError: unknown backend, or a ``dtype``/``p_dtype`` that is not a floating dtype.
        """
        if not isinstance(backend, str):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r:.60}.")
        g = PreferenceGame.__new__(PreferenceGame)
        g.__dict__.update(self.__dict__)
        if backend == "numpy":
            dt = _np_dtype(np.float64 if dtype is None else dtype, "dtype")
            pdt = dt if p_dtype is None else _np_dtype(p_dtype, "p_dtype")
            if dt.kind != "f" or pdt.kind != "f":
                raise ValueError(f"dtype and p_dtype must be floating dtypes, got {dt} and {pdt}.")
            g.P = np.asarray(_xp.to_numpy(self.P), dtype=pdt)
            g.ref = np.asarray(_xp.to_numpy(self.ref), dtype=dt)
        elif backend == "torch":
            import torch

            dt = torch.float64 if dtype is None else dtype
            pdt = dt if p_dtype is None else p_dtype
            if not (isinstance(dt, torch.dtype) and dt.is_floating_point and isinstance(pdt, torch.dtype) and pdt.is_floating_point):
                raise ValueError(f"dtype and p_dtype must be floating torch dtypes with backend='torch', got {dt} and {pdt}.")
            device = _torch_device(device)
            if _xp.is_torch(self.P):
                dev = self.P.device if device is None else device
                g.P = self.P.to(device=dev, dtype=pdt)
                g.ref = self.ref.to(device=dev, dtype=dt)
            else:
                g.P = torch.as_tensor(self.P, dtype=pdt, device=device)
                g.ref = torch.as_tensor(self.ref, dtype=dt, device=device)
        else:
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
        g.log_ref = _xp.log(g.ref)
        return g

    # ------------------------------------------------------------------- math
    def win_rates(self, policy: Any) -> Array:
        """``P(y > pi) = (P pi)(y)`` for every response ``y``: ``(n,)`` or ``(C, n)``."""
        pi = self.policy(policy)
        return self.unbatch(_xp.matvec(self.P, pi))  # (C, n)

    def preference(self, policy_a: Any, policy_b: Any, names: tuple[str, str] = ("policy_a", "policy_b")) -> Array:
        """``P(pi_a > pi_b) = pi_a^T P pi_b`` per context: a float (one context) or ``(C,)``; ``names`` label errors."""
        a = self.policy(policy_a, names[0])
        b = self.policy(policy_b, names[1])
        val = _xp.asum(a * _xp.matvec(self.P, b), axis=-1)  # (C,)
        return float(val[0]) if self._squeeze else val
