"""Adapter for pairwise judges with TRL's historical shape (duck-typed; nashalign never imports TRL).

Until TRL v1.1 removed them, TRL's pairwise judges exposed

    judge.judge(prompts: list[str], completions: list[list[str]], shuffle_order: bool = True, ...) -> list

returning, for each prompt, the *index* of the better of its two completions (0 or 1, and ``-1`` when the
judge failed, e.g. an unparsable API answer), or with ``return_scores=True`` (PairRM) the probability that
the first completion is better.  :class:`JudgeAdapter` turns any such object into a preference oracle:
index 0 → ``P = 1``, index 1 → ``P = 0``, a score → ``P = score``.
"""

from __future__ import annotations

import inspect
import random
from typing import Any, Literal

import torch

from nashalign.oracles.base import Batch, OracleBase, OracleError, batch_len, describe_pair, register_adapter

__all__ = ["JudgeAdapter"]


class JudgeAdapter(OracleBase):
    """A preference oracle from an object with ``judge(prompts, completions, ...)``.

    Args:
        judge: the judge object.  ``judge.judge(prompts, [[a, b], ...])`` must return one result per prompt.
        return_scores: ask for probabilities (``return_scores=True``) when the judge's ``judge`` method accepts
            that keyword (``"auto"``, default), always (``True``) or never (``False``: hard 0/1 labels).
        shuffle_order: passed to the judge when it accepts it.  Default ``False``: the order is the caller's,
            and :func:`~nashalign.oracles.wrappers.symmetrize` removes position bias deterministically.
        on_failure: what a ``-1`` (failed judgement) becomes: ``"raise"`` (default; an :class:`OracleError`
            naming the pairs), ``"tie"`` (``P = 1/2``), or ``"coin"`` (a fair 0/1 coin from ``seed``).
        seed: seed of the coin for ``on_failure="coin"``.
        name: used in error messages (default: the judge's class name).

    Examples:
        >>> from nashalign.oracles import as_oracle
        >>> class Longer:   # TRL's pairwise-judge shape: the index of the better completion
        ...     def judge(self, prompts, completions, shuffle_order=True):
        ...         return [0 if len(a) >= len(b) else 1 for a, b in completions]
        >>> oracle = as_oracle(Longer())   # dispatched to JudgeAdapter
        >>> oracle(["q", "q"], ["a long answer", "no"], ["short", "a longer one"]).tolist()
        [1.0, 0.0]
    """

    def __init__(
        self,
        judge: Any,
        return_scores: bool | Literal["auto"] = "auto",
        shuffle_order: bool = False,
        on_failure: Literal["raise", "tie", "coin"] = "raise",
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        method = getattr(judge, "judge", None)
        if not callable(method):
            raise TypeError(
                f"{type(judge).__name__} has no judge(prompts, completions) method; JudgeAdapter wraps objects "
                "shaped like TRL's pairwise judges. For a plain function use as_oracle/from_callable."
            )
        if on_failure not in ("raise", "tie", "coin"):
            raise ValueError(f"on_failure must be 'raise', 'tie' or 'coin', got {on_failure!r}.")
        self.judge = judge
        self.on_failure = on_failure
        self.shuffle_order = bool(shuffle_order)
        self._rng = random.Random(seed)
        try:
            params = inspect.signature(method).parameters
        except (TypeError, ValueError):  # builtins / C extensions
            params = {}
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self._accepts = {k for k in ("shuffle_order", "return_scores") if k in params or takes_kwargs}
        if return_scores == "auto":
            return_scores = "return_scores" in params
        if return_scores and "return_scores" not in self._accepts:
            raise ValueError(f"return_scores=True but {type(judge).__name__}.judge takes no return_scores argument.")
        self.return_scores = bool(return_scores)
        self.name = name or f"JudgeAdapter({type(judge).__name__})"

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        seq = [x.tolist() if isinstance(x, torch.Tensor) else list(x) for x in (prompts, first, second)]
        prompts_l, first_l, second_l = seq
        kwargs: dict[str, Any] = {}
        if "shuffle_order" in self._accepts:
            kwargs["shuffle_order"] = self.shuffle_order
        if "return_scores" in self._accepts and self.return_scores:
            kwargs["return_scores"] = True
        results = self.judge.judge(prompts_l, [[a, b] for a, b in zip(first_l, second_l)], **kwargs)
        results = results.tolist() if isinstance(results, torch.Tensor) else list(results)
        if len(results) != B:
            raise OracleError(f"{self.name}: the judge returned {len(results)} results for {B} pairs.")
        out: list[float] = []
        failed: list[int] = []
        for i, r in enumerate(results):
            if self.return_scores:
                p = float(r)
                if p == -1.0:
                    failed.append(i)
                out.append(p)
                continue
            if r == 0:
                out.append(1.0)
            elif r == 1:
                out.append(0.0)
            elif r == -1:
                failed.append(i)
                out.append(float("nan"))
            else:
                raise OracleError(
                    f"{self.name}: judgement #{i} is {r!r}; a pairwise judge returns 0 (first better), 1 (second "
                    "better) or -1 (failure). If it returns probabilities, pass return_scores=True."
                )
        if failed:
            if self.on_failure == "raise":
                shown = "; ".join(f"#{i}: {describe_pair(prompts_l[i], first_l[i], second_l[i])}" for i in failed[:3])
                raise OracleError(
                    f"{self.name}: the judge failed (returned -1) on {len(failed)} of {B} pairs ({shown}). "
                    "Retry with retrying(...), or choose on_failure='tie' or 'coin'."
                )
            for i in failed:
                out[i] = 0.5 if self.on_failure == "tie" else float(self._rng.random() < 0.5)
        return torch.tensor(out, dtype=torch.float64)


def has_judge_method(obj: Any) -> bool:
    """Whether ``obj`` has a callable ``judge`` attribute (the shape :class:`JudgeAdapter` wraps)."""
    return callable(getattr(obj, "judge", None))


register_adapter(has_judge_method, JudgeAdapter)
