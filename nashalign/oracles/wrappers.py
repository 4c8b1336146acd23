"""Wrappers that turn one preference oracle into another; they compose by function application.

    oracle = cached(symmetrize(micro_batched(retrying(validated(my_judge)), 32)))

* :func:`symmetrize` — ask both orders in one batched call and return ``(p(a, b) + 1 - p(b, a)) / 2``;
* :func:`cached` — remember answers keyed on ``(prompt, first, second)``;
* :func:`micro_batched` — split large batches into pieces of at most ``batch_size`` pairs;
* :func:`retrying` — retry transient failures with exponential back-off;
* :func:`validated` — raise :class:`OracleError` naming the oracle and the inputs on NaN, out-of-range or
  wrong-shape outputs;
* :func:`counted` — count calls and pairs asked.

:func:`check_oracle` measures how far an oracle is from consistency (``P(a ≻ b) + P(b ≻ a) = 1``) and its
position bias on a sample.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nashalign._validation import check_int, check_positive
from nashalign.oracles.base import (
    Batch,
    OracleBase,
    OracleError,
    PreferenceOracle,
    as_oracle,
    batch_len,
    concat,
    describe_pair,
    keys_of,
    oracle_name,
    slice_batch,
    take,
    to_prob_tensor,
)

__all__ = [
    "symmetrize",
    "cached",
    "micro_batched",
    "retrying",
    "validated",
    "counted",
    "check_oracle",
    "OracleReport",
    "SymmetrizedOracle",
    "CachedOracle",
    "MicroBatchedOracle",
    "RetryingOracle",
    "ValidatedOracle",
    "CountedOracle",
]


class _Wrapper(OracleBase):
    """Base of the wrappers: holds ``inner`` and exposes ``unwrap()``."""

    def __init__(self, oracle: Any, label: str) -> None:
        self.inner = as_oracle(oracle)
        self.name = f"{label}({oracle_name(self.inner)})"

    def unwrap(self) -> Any:
        """The innermost oracle of a wrapper chain."""
        inner = self.inner
        while isinstance(inner, _Wrapper):
            inner = inner.inner
        return inner

    def __getattr__(self, item: str) -> Any:
        # Forward unknown attributes (num_responses, P, score, ...) to the wrapped oracle.
        if item == "inner" or item.startswith("__"):
            raise AttributeError(item)
        return getattr(self.inner, item)

    def _ask(self, prompts: Batch, first: Batch, second: Batch, expect: int) -> torch.Tensor:
        out = to_prob_tensor(self.inner(prompts, first, second), oracle_name(self.inner))
        if out.shape != (expect,):
            raise OracleError(
                f"Oracle {oracle_name(self.inner)!r} returned shape {tuple(out.shape)} for {expect} pairs; it "
                f"must return a tensor of shape ({expect},)."
            )
        return out


# --------------------------------------------------------------------------- symmetrize
class SymmetrizedOracle(_Wrapper):
    """``P_sym(a ≻ b | x) = (P(a ≻ b | x) + 1 - P(b ≻ a | x)) / 2`` (see :func:`symmetrize`)."""

    def __init__(self, oracle: Any) -> None:
        super().__init__(oracle, "symmetrize")

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        p = self._ask(concat(prompts, prompts), concat(first, second), concat(second, first), 2 * B)
        if p.dtype != torch.float64 and p.device.type != "mps":
            p = p.to(torch.float64)  # float32 inputs then combine exactly: P_sym(a, b) + P_sym(b, a) == 1
        return (p[:B] + (1.0 - p[B:])) / 2.0


def symmetrize(oracle: PreferenceOracle) -> SymmetrizedOracle:
    """Remove position bias: ask both orders in ONE batched call of size ``2B`` and average.

    ``P_sym(a ≻ b) = (P(a ≻ b) + 1 - P(b ≻ a)) / 2`` satisfies ``P_sym(a ≻ b) + P_sym(b ≻ a) = 1`` and
    ``P_sym(a ≻ a) = 1/2`` exactly, whatever the oracle.  If ``P(a ≻ b) = q + d`` and ``P(b ≻ a) = 1 - q + d``
    (a bias ``d`` toward the first position), ``P_sym = q``: the bias cancels.  It doubles the cost.
    The combination is done in float64 (except on MPS), so the identities hold to the last bit for float32
    oracles too.

    Examples:
        >>> import torch
        >>> from nashalign.oracles import symmetrize
        >>> biased = lambda x, a, b: torch.full((len(a),), 0.7)   # always prefers the first position
        >>> symmetrize(biased)(["q", "q"], ["a", "a"], ["b", "a"]).tolist()   # (0.7 + 1 - 0.7) / 2
        [0.5, 0.5]
    """
    return SymmetrizedOracle(oracle)


# --------------------------------------------------------------------------- cache
class CachedOracle(_Wrapper):
    """Memoises answers keyed on ``(prompt, first, second)``; see :func:`cached`.

    ``misses`` counts the distinct pairs sent to the oracle, ``hits`` every other pair answered.
    """

    def __init__(self, oracle: Any, maxsize: int | None = None) -> None:
        super().__init__(oracle, "cached")
        self.maxsize = None if maxsize is None else check_int(maxsize, "maxsize", 1, "Pass None for an unbounded cache.")
        self._store: OrderedDict[Hashable, float] = OrderedDict()
        self._dtype: torch.dtype | None = None
        self._device: torch.device | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def cache_clear(self) -> None:
        """Forget every stored answer and reset the hit/miss counters."""
        self._store.clear()
        self.hits = self.misses = 0

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        keys = list(zip(keys_of(prompts), keys_of(first), keys_of(second)))
        local: dict[Hashable, float] = {}
        todo: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            if key in local or key in todo:
                continue
            if key in self._store:
                local[key] = self._store[key]
                self._store.move_to_end(key)
            else:
                todo[key] = i
        self.misses += len(todo)  # distinct pairs sent to the oracle
        self.hits += B - len(todo)
        if todo:
            idx = list(todo.values())
            out = self._ask(take(prompts, idx), take(first, idx), take(second, idx), len(idx))
            if self._dtype is None:
                self._dtype, self._device = out.dtype, out.device
            for key, value in zip(todo, out.tolist()):
                local[key] = value
                self._store[key] = value
                if self.maxsize is not None and len(self._store) > self.maxsize:
                    self._store.popitem(last=False)
        dtype = self._dtype or torch.float64
        return torch.tensor([local[k] for k in keys], dtype=dtype, device=self._device)


def cached(oracle: PreferenceOracle, maxsize: int | None = None) -> CachedOracle:
    """Cache answers keyed on ``(prompt, first, second)`` (tensor ids become ints); LRU when ``maxsize``.

    Within one call each distinct pair is asked once; a call whose pairs are all cached asks nothing.
    Only the misses are sent to the oracle, in one batched call.  Do not cache a stochastic oracle
    (e.g. ``MatrixOracle(bernoulli=True)``): it would freeze its first draw.
    """
    return CachedOracle(oracle, maxsize=maxsize)


# --------------------------------------------------------------------------- micro-batching
class MicroBatchedOracle(_Wrapper):
    """Splits a call into pieces of at most ``batch_size`` pairs; see :func:`micro_batched`."""

    def __init__(self, oracle: Any, batch_size: int) -> None:
        batch_size = check_int(batch_size, "batch_size", 1)
        super().__init__(oracle, f"micro_batched[{batch_size}]")
        self.batch_size = batch_size

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        if B <= self.batch_size:
            return self._ask(prompts, first, second, B)
        parts = []
        for start in range(0, B, self.batch_size):
            stop = min(start + self.batch_size, B)
            parts.append(
                self._ask(
                    slice_batch(prompts, start, stop),
                    slice_batch(first, start, stop),
                    slice_batch(second, start, stop),
                    stop - start,
                )
            )
        return torch.cat([p.to(parts[0].device) for p in parts])


def micro_batched(oracle: PreferenceOracle, batch_size: int) -> MicroBatchedOracle:
    """Call ``oracle`` on consecutive pieces of at most ``batch_size`` pairs and concatenate the answers."""
    return MicroBatchedOracle(oracle, batch_size)


# --------------------------------------------------------------------------- retry
class RetryingOracle(_Wrapper):
    """Retries failed calls with exponential back-off; see :func:`retrying`."""

    def __init__(
        self,
        oracle: Any,
        attempts: int = 3,
        backoff: float = 1.0,
        factor: float = 2.0,
        max_backoff: float = 60.0,
        exceptions: tuple[type[BaseException], ...] = (Exception,),
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        super().__init__(oracle, "retrying")
        self.attempts = check_int(attempts, "attempts", 1)
        self.backoff = check_positive(backoff, "backoff", allow_zero=True)
        self.factor = check_positive(factor, "factor")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1 (the backoff grows by it after each failure), got {factor!r}.")
        self.max_backoff = check_positive(max_backoff, "max_backoff", allow_zero=True)
        exc = (exceptions,) if isinstance(exceptions, type) else exceptions
        if not isinstance(exc, tuple) or not all(isinstance(e, type) and issubclass(e, BaseException) for e in exc):
            raise TypeError(f"exceptions must be a tuple of exception classes such as (TimeoutError,), got {exceptions!r}.")
        self.exceptions = exc
        if not callable(sleep):
            raise TypeError(f"sleep must be callable as sleep(seconds), got {type(sleep).__name__}.")
        self.sleep = sleep
        self.failures = 0

    def delay(self, attempt: int) -> float:
        """Seconds slept after failed attempt number ``attempt`` (0-based): ``min(max, backoff * factor**attempt)``."""
        return min(self.max_backoff, self.backoff * self.factor**attempt)

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        last: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                return self._ask(prompts, first, second, B)
            except self.exceptions as err:
                last = err
                self.failures += 1
                if attempt + 1 < self.attempts:
                    self.sleep(self.delay(attempt))
        inner = oracle_name(self.inner)
        raise OracleError(
            f"Oracle {inner!r} failed {self.attempts} times in a row on a batch of {B} pairs (first: "
            f"{describe_pair(_first(prompts), _first(first), _first(second))}); giving up. Last error: "
            f"{type(last).__name__}: {last}"
        ) from last


def _first(x: Batch) -> Any:
    return x[0] if len(x) else None


def retrying(
    oracle: PreferenceOracle,
    attempts: int = 3,
    backoff: float = 1.0,
    factor: float = 2.0,
    max_backoff: float = 60.0,
    exceptions: tuple[type[BaseException], ...] = (Exception,),
    sleep: Callable[[float], Any] = time.sleep,
) -> RetryingOracle:
    """Retry a failing oracle (remote judges, rate limits) up to ``attempts`` times in all.

    After failed attempt ``k`` (0-based) it sleeps ``min(max_backoff, backoff * factor**k)`` seconds
    (``sleep`` is injectable, so tests need not wait).  Only ``exceptions`` are retried; anything else
    propagates at once.  When every attempt fails it raises :class:`OracleError` naming the oracle and the
    batch, chained to the last error.
    """
    return RetryingOracle(oracle, attempts, backoff, factor, max_backoff, exceptions, sleep)


# --------------------------------------------------------------------------- validation
class ValidatedOracle(_Wrapper):
    """Checks every answer; see :func:`validated`."""

    def __init__(self, oracle: Any, name: str | None = None) -> None:
        super().__init__(oracle, "validated")
        self.label = name or oracle_name(self.inner)
        self.name = f"validated({self.label})"

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.label)
        return check_answers(self.inner(prompts, first, second), B, prompts, first, second, self.label)

    def check(self, prompts: Batch, responses: Any, num_pairs: int = 64, seed: int = 0) -> OracleReport:
        """Measure consistency and position bias on a sample (:func:`check_oracle`)."""
        return check_oracle(self, prompts, responses, num_pairs=num_pairs, seed=seed)


def check_answers(raw: Any, B: int, prompts: Batch, first: Batch, second: Batch, label: str) -> torch.Tensor:
    """An oracle's raw answer to ``B`` queries as a float tensor ``(B,)`` of probabilities in ``[0, 1]``.

    Raises :class:`OracleError` naming the oracle (``label``) and, for bad values, the offending queries when
    the answer is not numeric, has another shape than ``(B,)``, or holds NaN or values outside ``[0, 1]``.
    """
    out = to_prob_tensor(raw, label)
    if tuple(out.shape) != (B,):
        raise OracleError(
            f"Oracle {label!r} returned shape {tuple(out.shape)} for {B} pairs; it must return a tensor "
            f"of shape ({B},) holding P(first[i] ≻ second[i] | prompts[i])."
        )
    bad = ~((out >= 0) & (out <= 1))  # NaN fails both comparisons
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().tolist()
        vals = out.detach().cpu().tolist()
        n_nan = int(torch.isnan(out).sum())
        shown = "; ".join(f"#{i}: {describe_pair(prompts[i], first[i], second[i])} -> {vals[i]!r}" for i in idx[:3])
        more = f" (and {len(idx) - 3} more)" if len(idx) > 3 else ""
        raise OracleError(
            f"Oracle {label!r} returned {len(idx)} invalid value(s) of {B} ({n_nan} NaN, "
            f"{len(idx) - n_nan} outside [0, 1]): {shown}{more}. An oracle must return probabilities "
            "P(first ≻ second | prompt) in [0, 1]; map scores or logits through a sigmoid."
        )
    return out


def validated(oracle: PreferenceOracle, name: str | None = None) -> ValidatedOracle:
    """Raise :class:`OracleError` naming the oracle (``name``) and the offending inputs when an answer is NaN,
    outside ``[0, 1]``, or the output does not have shape ``(B,)``.  Array-like outputs become tensors."""
    return ValidatedOracle(oracle, name=name)


# --------------------------------------------------------------------------- counting
class CountedOracle(_Wrapper):
    """Counts ``calls`` and ``queries`` (pairs asked); see :func:`counted`."""

    def __init__(self, oracle: Any) -> None:
        super().__init__(oracle, "counted")
        self.calls = 0
        self.queries = 0

    def reset(self) -> None:
        self.calls = self.queries = 0

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        self.calls += 1
        self.queries += B
        return self.inner(prompts, first, second)


def counted(oracle: PreferenceOracle) -> CountedOracle:
    """Count the calls and the pairs sent to ``oracle`` (``.calls``, ``.queries``; ``.reset()``)."""
    return CountedOracle(oracle)


# --------------------------------------------------------------------------- diagnostics
@dataclass(frozen=True)
class OracleReport:
    """What :func:`check_oracle` measured on ``num_pairs`` sampled pairs ``(x, a, b)`` with ``a != b``.

    Attributes:
        num_pairs: pairs sampled.
        max_asymmetry: ``max |P(a ≻ b) + P(b ≻ a) - 1|`` (0 for a consistent oracle).
        mean_asymmetry: the mean of the same.
        position_bias: ``mean (P(a ≻ b) + P(b ≻ a) - 1) / 2``: the probability mass a response gains by being
            shown first (positive) or second (negative).  Symmetrising removes it.
        max_self_deviation: ``max |P(a ≻ a) - 1/2|`` over the sampled ``a``.
        min_p, max_p: range of the answers seen.
    """

    num_pairs: int
    max_asymmetry: float
    mean_asymmetry: float
    position_bias: float
    max_self_deviation: float
    min_p: float
    max_p: float

    def consistent(self, tol: float = 1e-6) -> bool:
        """True when ``P + P^T = 1`` and ``P(a ≻ a) = 1/2`` hold to ``tol`` on the sample."""
        return self.max_asymmetry <= tol and self.max_self_deviation <= tol

    def __str__(self) -> str:
        return (
            f"OracleReport on {self.num_pairs} pairs: max |P(a>b)+P(b>a)-1| = {self.max_asymmetry:.3g} "
            f"(mean {self.mean_asymmetry:.3g}), position bias {self.position_bias:+.3g}, "
            f"max |P(a>a)-1/2| = {self.max_self_deviation:.3g}, answers in [{self.min_p:.3g}, {self.max_p:.3g}]"
        )


def _as_list(x: Any, name: str, max_ndim: int) -> list[Any]:
    """``x`` (a list, tuple or tensor of at most ``max_ndim`` dimensions) as a list; else a TypeError naming it."""
    if isinstance(x, torch.Tensor):
        if x.ndim < 1 or x.ndim > max_ndim:
            raise TypeError(f"{name} must be a tensor with 1 to {max_ndim} dimensions, got shape {tuple(x.shape)}.")
        return x.tolist()
    if isinstance(x, (list, tuple, range)):
        return list(x)
    raise TypeError(
        f"{name} must be a list (or a tensor of ids), got {type(x).__name__}: check_oracle(oracle, prompts, "
        "responses) takes the prompts and the candidate responses (shared, or one list per prompt)."
    )


def _is_per_prompt(responses: Any) -> bool:
    if isinstance(responses, torch.Tensor):
        return responses.ndim == 2
    first = next(iter(responses), None)
    return isinstance(first, (list, tuple, torch.Tensor))


def check_oracle(
    oracle: PreferenceOracle, prompts: Batch, responses: Any, num_pairs: int = 64, seed: int = 0
) -> OracleReport:
    """Measure an oracle's consistency and position bias on ``num_pairs`` random pairs.

    Args:
        oracle: any oracle (its answers are validated on the way).
        prompts: the prompts (strings, or context ids as a list/1-D tensor).
        responses: candidate responses shared by all prompts (a list, or a 1-D tensor of ids), or one list of
            candidates per prompt (a list of lists, or a ``(C, n)`` tensor).
        num_pairs: how many ``(x, a, b)`` to sample (``a != b``); seed: the sampler's seed.

    All ``3 * num_pairs`` questions (``P(a ≻ b)``, ``P(b ≻ a)``, ``P(a ≻ a)``) go in one batched call.
    """
    num_pairs = check_int(num_pairs, "num_pairs", 1, "check_oracle needs at least one pair to measure anything.")
    seed = check_int(seed, "seed", 0)
    prompt_list = _as_list(prompts, "prompts", 1)
    if isinstance(responses, torch.Tensor) and responses.ndim not in (1, 2):
        raise TypeError(f"responses must be a 1-D tensor of ids or a (C, n) tensor, got shape {tuple(responses.shape)}.")
    _as_list(responses, "responses", 2)
    for label, x in (("prompts", prompts), ("responses", responses)):
        if isinstance(x, torch.Tensor) and (x.is_complex() or x.is_floating_point() or x.numel() == 0):
            raise TypeError(f"{label} must be a non-empty tensor of integer ids (or a list), got {x.dtype} {tuple(x.shape)}.")
    if not prompt_list:
        raise ValueError("check_oracle needs at least one prompt.")
    per_prompt = _is_per_prompt(responses)
    if isinstance(responses, torch.Tensor):
        responses = responses.tolist()
    if per_prompt and (len(responses) != len(prompt_list) or not all(isinstance(r, (list, tuple)) for r in responses)):
        raise ValueError(
            f"responses holds {len(responses)} entries for {len(prompt_list)} prompts: pass one list of candidates per "
            "prompt, or one flat list shared by all prompts."
        )
    rng = random.Random(seed)
    xs, as_, bs = [], [], []
    for _ in range(int(num_pairs)):
        i = rng.randrange(len(prompt_list))
        cands: Sequence[Any] = responses[i] if per_prompt else responses
        if len(cands) < 2:
            raise ValueError("check_oracle needs at least two candidate responses per prompt.")
        a, b = rng.sample(range(len(cands)), 2)
        xs.append(prompt_list[i])
        as_.append(cands[a])
        bs.append(cands[b])
    tabular = isinstance(prompts, torch.Tensor) or all(isinstance(v, int) for v in xs + as_ + bs)

    def pack(items: list[Any]) -> Batch:
        return torch.tensor(items, dtype=torch.long) if tabular else items

    N = len(xs)
    checker = oracle if isinstance(oracle, ValidatedOracle) else validated(oracle)
    p = checker(pack(xs * 3), pack(as_ + bs + as_), pack(bs + as_ + as_)).detach().to(torch.float64).cpu()
    pab, pba, paa = p[:N], p[N : 2 * N], p[2 * N :]
    excess = pab + pba - 1.0
    return OracleReport(
        num_pairs=N,
        max_asymmetry=float(excess.abs().max()) if N else 0.0,
        mean_asymmetry=float(excess.abs().mean()) if N else 0.0,
        position_bias=float(excess.mean() / 2) if N else 0.0,
        max_self_deviation=float((paa - 0.5).abs().max()) if N else 0.0,
        min_p=float(p.min()) if N else float("nan"),
        max_p=float(p.max()) if N else float("nan"),
    )
