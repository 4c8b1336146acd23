"""The preference-oracle protocol and the small helpers every oracle shares.

A preference oracle answers batched questions "given prompt ``x``, is ``a`` preferred to ``b``?" with
probabilities:

    oracle(prompts, first, second)[i] = P(first[i] ≻ second[i] | prompts[i])  in [0, 1].

The three arguments are equal-length sequences: lists of strings for language models, or 1-D integer
tensors (context ids and response ids) for tabular games.  A plain Python function with this signature is
an oracle; the classes in :mod:`nashalign.oracles` are oracles too, and the wrappers in
:mod:`nashalign.oracles.wrappers` turn one oracle into another (symmetrised, cached, micro-batched,
retried, validated, counted).

A *consistent* oracle satisfies ``P(a ≻ b) + P(b ≻ a) = 1`` and hence ``P(a ≻ a) = 1/2`` (SPEC.md §0).
Model-based judges rarely do (position bias); :func:`~nashalign.oracles.wrappers.symmetrize` restores it
exactly and :func:`~nashalign.oracles.wrappers.check_oracle` measures how far an oracle is from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

#: What an oracle takes for each of ``prompts``, ``first``, ``second``: a sequence (e.g. ``list[str]``)
#: or a 1-D integer tensor of ids (tabular games).
Batch = Sequence[Any] | torch.Tensor

__all__ = [
    "Batch",
    "OracleError",
    "PreferenceOracle",
    "FunctionOracle",
    "as_oracle",
    "register_adapter",
    "from_callable",
    "oracle_name",
    "batch_len",
]


class OracleError(ValueError):
    """An oracle broke its contract (wrong shape, NaN, a value outside ``[0, 1]``, a failed judgement).

    The message names the oracle and the offending inputs.
    """


@runtime_checkable
class PreferenceOracle(Protocol):
    """``oracle(prompts, first, second) -> Tensor`` of shape ``(B,)`` with ``P(first[i] ≻ second[i] | prompts[i])``.

    ``prompts``, ``first`` and ``second`` have the same length ``B``; they are sequences (strings for
    language models) or 1-D integer tensors (context and response ids for tabular games).  The result is
    a float tensor (float32 or float64) with values in ``[0, 1]``.  Any callable with this signature
    satisfies the protocol, including a plain function.
    """

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor: ...


# --------------------------------------------------------------------------- batch helpers
def batch_len(prompts: Batch, first: Batch, second: Batch, name: str = "oracle") -> int:
    """The common length ``B`` of the three inputs; raises :class:`OracleError` when they differ."""
    lens = []
    for label, x in (("prompts", prompts), ("first", first), ("second", second)):
        if isinstance(x, torch.Tensor):
            if x.ndim != 1:
                raise OracleError(
                    f"{name}: {label} must be a 1-D tensor of ids (one per pair), got shape {tuple(x.shape)}."
                )
            lens.append(int(x.shape[0]))
        elif isinstance(x, (str, bytes)):
            raise OracleError(
                f"{name}: {label} must be a sequence with one item per pair, got a single string {x!r}; "
                "wrap it in a list."
            )
        else:
            try:
                lens.append(len(x))
            except TypeError as err:
                raise OracleError(
                    f"{name}: {label} must be a sequence or a 1-D tensor, got {type(x).__name__}."
                ) from err
    if len(set(lens)) != 1:
        raise OracleError(
            f"{name}: prompts, first and second must have the same length, got {lens[0]}, {lens[1]}, "
            f"{lens[2]}. Pair i is (prompts[i], first[i], second[i])."
        )
    return lens[0]


def take(x: Batch, index: Sequence[int] | torch.Tensor) -> Batch:
    """``x[index]`` for a tensor, ``[x[i] for i in index]`` for a sequence."""
    if isinstance(x, torch.Tensor):
        idx = torch.as_tensor(index, dtype=torch.long, device=x.device)
        return x.index_select(0, idx)
    if isinstance(index, torch.Tensor):
        index = index.tolist()
    return [x[i] for i in index]


def concat(a: Batch, b: Batch) -> Batch:
    """``a`` followed by ``b`` (``torch.cat`` for tensors, list concatenation otherwise)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.cat([a, b.to(a.device)])
    return as_list(a) + as_list(b)


def slice_batch(x: Batch, start: int, stop: int) -> Batch:
    """``x[start:stop]``, as a tensor or a list."""
    return x[start:stop] if isinstance(x, torch.Tensor) else list(x[start:stop])


def as_list(x: Batch) -> list[Any]:
    """The items of ``x`` as a list (a tensor's as Python numbers)."""
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


def keys_of(x: Batch) -> list[Hashable]:
    """Hashable per-item keys: tensors become Python ints/floats, lists/tuples become tuples."""
    out: list[Hashable] = []
    for item in as_list(x):
        if isinstance(item, torch.Tensor):
            item = item.item() if item.numel() == 1 else tuple(item.flatten().tolist())
        elif isinstance(item, list):
            item = tuple(item)
        elif hasattr(item, "item") and callable(item.item) and not isinstance(item, (str, bytes)):
            item = item.item()  # numpy scalars
        out.append(item)
    return out


def unique_items(
    prompts: Sequence[Hashable], first: Sequence[Hashable], second: Sequence[Hashable]
) -> tuple[list[Hashable], list[Hashable], list[int], list[int]]:
    """Number the distinct ``(prompt, response)`` items of a batch of pairs, so that each is scored once.

    Takes the keys (:func:`keys_of`) of the three inputs.  Returns ``(item_prompts, item_responses, ia, ib)``:
    item ``k`` is ``(item_prompts[k], item_responses[k])``, and pair ``i`` compares item ``ia[i]`` (its first
    response) with item ``ib[i]`` (its second).  Items are numbered in order of first appearance.
    """
    index: dict[tuple[Hashable, Hashable], int] = {}
    item_prompts: list[Hashable] = []
    item_responses: list[Hashable] = []
    ia: list[int] = []
    ib: list[int] = []
    for p, a, b in zip(prompts, first, second):
        for resp, sink in ((a, ia), (b, ib)):
            key = (p, resp)
            if key not in index:
                index[key] = len(item_prompts)
                item_prompts.append(p)
                item_responses.append(resp)
            sink.append(index[key])
    return item_prompts, item_responses, ia, ib


def describe_item(item: Any, limit: int = 60) -> str:
    """A short ``repr`` for error messages (long strings are cut in the middle)."""
    if isinstance(item, torch.Tensor) and item.numel() == 1:
        item = item.item()
    text = repr(item)
    if len(text) > limit:
        half = (limit - 5) // 2
        text = text[:half] + " ... " + text[-half:]
    return text


def describe_pair(prompt: Any, first: Any, second: Any) -> str:
    """``prompt=..., first=..., second=...`` for error messages (each item by :func:`describe_item`)."""
    return f"prompt={describe_item(prompt)}, first={describe_item(first)}, second={describe_item(second)}"


# --------------------------------------------------------------------------- naming
def oracle_name(oracle: Any) -> str:
    """A readable name for ``oracle``: its ``name`` attribute, its function name, or its class name."""
    name = getattr(oracle, "name", None)
    if isinstance(name, str) and name:
        return name
    qual = getattr(oracle, "__qualname__", None) or getattr(oracle, "__name__", None)
    if isinstance(qual, str):
        return qual
    return type(oracle).__name__


def to_prob_tensor(out: Any, name: str) -> torch.Tensor:
    """Turn an oracle's raw output (tensor, numpy array, list of numbers) into a float tensor."""
    if isinstance(out, torch.Tensor):
        t = out
    else:
        try:
            arr = np.asarray(out)  # Python floats are doubles: lists become float64, not float32
            if arr.dtype == object:
                raise TypeError("mixed or nested objects")
            t = torch.from_numpy(np.array(arr, dtype=np.float64 if arr.dtype.kind in "biu" else arr.dtype))
        except (TypeError, ValueError, RuntimeError) as err:
            raise OracleError(
                f"Oracle {name!r} returned {type(out).__name__}, which is not a tensor of probabilities: "
                f"{err}. Return a torch tensor of shape (B,) with P(first ≻ second | prompt)."
            ) from err
    if torch.is_complex(t):
        raise OracleError(f"Oracle {name!r} returned a complex tensor; return real probabilities.")
    if not torch.is_floating_point(t):
        t = t.to(torch.float64 if t.device.type == "cpu" else torch.float32)
    return t


# --------------------------------------------------------------------------- plain functions
class OracleBase:
    """Shared behaviour of nashalign's oracle classes: a ``name`` and a ``repr``."""

    is_nashalign_oracle = True
    name: str = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})" if self.name else f"{type(self).__name__}()"


class FunctionOracle(OracleBase):
    """Wrap a plain function ``fn(prompts, first, second)`` so its output always comes back as a float tensor.

    ``fn`` may return a tensor, a numpy array or a list of numbers; the wrapper converts it with
    ``torch.as_tensor`` (integers and booleans become float64).  Range and shape are checked by
    :func:`~nashalign.oracles.wrappers.validated`, not here.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionOracle needs a callable oracle f(prompts, first, second), got {type(fn).__name__}.")
        self.fn = fn
        self.name = name or oracle_name(fn)

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        return to_prob_tensor(self.fn(prompts, first, second), self.name)

    def __repr__(self) -> str:
        return f"FunctionOracle({self.name})"


def _resolve_dotted(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"oracle {path!r} is not a dotted path; write the oracle as 'package.module.function' (or pass a callable)."
        )
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise ValueError(f"Could not find the oracle {path!r}: {err}.") from err
        return obj
    raise ValueError(f"Could not import any module prefix of the oracle {path!r}; is the package installed?")


def from_callable(fn: Callable[..., Any] | str, name: str | None = None) -> FunctionOracle:
    """An oracle from a function ``fn(prompts, first, second)`` or its dotted import path (for YAML configs).

    Examples:
        >>> import torch
        >>> from nashalign.oracles import from_callable
        >>> longer = from_callable(lambda x, a, b: torch.tensor([float(len(s) > len(t)) for s, t in zip(a, b)]))
        >>> longer(["q"], ["a long answer"], ["short"]).tolist()
        [1.0]
    """
    if isinstance(fn, str):
        resolved = _resolve_dotted(fn)
        return FunctionOracle(resolved, name=name or fn)
    return FunctionOracle(fn, name=name)


#: Adapters that :func:`as_oracle` tries, in order, before the plain-callable case: ``(accepts, build)``
#: pairs, where ``accepts(obj)`` says whether the adapter handles ``obj`` and ``build(obj, name=...)`` makes
#: the oracle.  Concrete adapters join with :func:`register_adapter` when their module is imported (the
#: package ``nashalign.oracles`` imports them all), so this protocol module imports none of them.
_ADAPTERS: list[tuple[Callable[[Any], bool], Callable[..., PreferenceOracle]]] = []


def register_adapter(accepts: Callable[[Any], bool], build: Callable[..., PreferenceOracle]) -> None:
    """Teach :func:`as_oracle` a new kind of object: when ``accepts(obj)`` is true it returns ``build(obj, name=name)``.

    Adapters are tried in registration order, after strings and nashalign oracles and before the
    plain-callable case.  :mod:`nashalign.oracles.trl_judge` registers :class:`~nashalign.oracles.JudgeAdapter`
    this way for objects with a ``judge`` method.  Registering the same ``(accepts, build)`` pair twice is a
    no-op.
    """
    if not callable(accepts) or not callable(build):
        raise TypeError(
            f"register_adapter needs two callables (accepts(obj) -> bool, build(obj, name=...) -> oracle), "
            f"got {type(accepts).__name__} and {type(build).__name__}."
        )
    if (accepts, build) not in _ADAPTERS:
        _ADAPTERS.append((accepts, build))


def as_oracle(obj: Any, name: str | None = None) -> PreferenceOracle:
    """Turn what a user brings into an oracle.

    * a string is read as the dotted import path of a callable (see :func:`from_callable`);
    * a nashalign oracle (anything with ``is_nashalign_oracle``) is returned unchanged;
    * an object a registered adapter accepts (:func:`register_adapter`) is adapted: an object with a
      ``judge(prompts, completions, ...)`` method (TRL's historical pairwise-judge shape) becomes a
      :class:`~nashalign.oracles.trl_judge.JudgeAdapter`;
    * any other callable ``f(prompts, first, second)`` is wrapped in :class:`FunctionOracle`, which
      converts its output to a float tensor.
    """
    if isinstance(obj, str):
        return from_callable(obj, name=name)
    if isinstance(obj, type):
        raise TypeError(
            f"oracle is the class {obj.__name__}, not an oracle: pass an instance (e.g. {obj.__name__}(...)) or a "
            "function f(prompts, first, second)."
        )
    if getattr(obj, "is_nashalign_oracle", False):
        return obj
    for accepts, build in _ADAPTERS:
        if accepts(obj):
            return build(obj, name=name)
    if callable(obj):
        return FunctionOracle(obj, name=name)
    raise TypeError(
        f"Cannot use {type(obj).__name__} as a preference oracle: pass a callable "
        "f(prompts, first, second) -> tensor of P(first ≻ second | prompt), or an object with a "
        "judge(prompts, completions) method."
    )
