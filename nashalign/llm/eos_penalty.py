"""Missing-EOS penalty: a response cut off at ``max_new_tokens`` (no EOS) loses.

``P'(a ≻ b) = clip(P(a ≻ b) - lambda (c_a - c_b), 0, 1)`` with ``c = 1`` for a truncated response, so
``lambda = 1`` makes a truncated response lose to every finished one, and ``P' + P'^T = 1`` still holds.
Truncation is the policy's own ``finished`` flag (EOS among the generated tokens only, never the prompt's:
the bug TRL had, trl#6802).  Every name here is re-exported by :mod:`nashalign.llm.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "apply_missing_eos_penalty",
    "FinishedText",
    "tag_finished",
    "MissingEOSPenaltyOracle",
    "missing_eos_penalized",
]


def _check_penalty(penalty: float | None) -> None:
    if penalty is None:
        return
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 <= penalty <= 1:
        raise ValueError(
            f"missing_eos_penalty must be a number in [0, 1] (1: a truncated response always loses to a finished "
            f"one) or None, got {penalty!r}."
        )


def apply_missing_eos_penalty(p: Any, finished_first: Any, finished_second: Any, penalty: float) -> torch.Tensor:
    """``clip(p - penalty * (c_first - c_second), 0, 1)`` with ``c = 1 - finished`` (a truncated response loses).

    ``finished_*`` are the samples' ``finished`` flags (EOS among the generated tokens).  Two truncated (or two
    finished) responses keep the oracle's answer; the result stays consistent (``P' + P'^T = 1``).
    """
    _check_penalty(penalty)
    p = torch.as_tensor(p)
    fa = torch.as_tensor(finished_first, dtype=torch.bool, device=p.device).reshape(-1)
    fb = torch.as_tensor(finished_second, dtype=torch.bool, device=p.device).reshape(-1)
    if not (p.shape == fa.shape == fb.shape):
        raise ValueError(f"p, finished_first and finished_second must have one entry per pair; got {p.shape}, "
                         f"{fa.shape}, {fb.shape}.")  # fmt: skip
    shift = penalty * ((~fa).to(p.dtype) - (~fb).to(p.dtype))
    return (p - shift).clamp(0.0, 1.0)


class FinishedText(str):
    """A response string that remembers whether it ended with EOS (``finished``); it is a ``str`` everywhere else."""

    finished: bool = True

    def __new__(cls, text: str, finished: bool) -> FinishedText:
        obj = super().__new__(cls, text)
        obj.finished = bool(finished)
        return obj


def tag_finished(texts: Sequence[str], finished: Any) -> list[FinishedText]:
    """``texts`` as :class:`FinishedText` carrying the samples' ``finished`` flags (``(N,)`` bool)."""
    flags = torch.as_tensor(finished).reshape(-1).tolist()
    if len(flags) != len(texts):
        raise ValueError(f"need one finished flag per text, got {len(flags)} flags for {len(texts)} texts.")
    return [FinishedText(t, f) for t, f in zip(texts, flags)]


def _finished_flags(batch: Any) -> torch.Tensor:
    flags = getattr(batch, "finished", None)  # a Samples batch
    if isinstance(flags, torch.Tensor) and flags.numel() == len(batch):
        return flags.detach().cpu().bool()
    return torch.tensor([bool(getattr(item, "finished", True)) for item in batch], dtype=torch.bool)


class MissingEOSPenaltyOracle:
    """``oracle`` with :func:`apply_missing_eos_penalty` applied, reading each response's ``finished`` flag.

    Responses are :class:`~nashalign.llm.policy.Samples` batches or :class:`FinishedText` strings (what the
    trainer passes when ``missing_eos_penalty`` is set); plain strings count as finished.
    """

    is_nashalign_oracle = True

    def __init__(self, oracle: Callable[..., Any], penalty: float) -> None:
        _check_penalty(penalty)
        self.inner = oracle
        self.penalty = float(penalty)
        self.name = f"missing_eos_penalized[{penalty:g}]({getattr(oracle, 'name', type(oracle).__name__)})"

    def __call__(self, prompts: Any, first: Any, second: Any) -> torch.Tensor:
        p = torch.as_tensor(self.inner(prompts, first, second))
        fa, fb = _finished_flags(first).to(p.device), _finished_flags(second).to(p.device)
        return apply_missing_eos_penalty(p, fa, fb, self.penalty)

    def __repr__(self) -> str:
        return self.name


def missing_eos_penalized(oracle: Callable[..., Any], penalty: float) -> MissingEOSPenaltyOracle:
    """Wrap ``oracle`` so that responses cut off at ``max_new_tokens`` lose (see :func:`apply_missing_eos_penalty`)."""
    return MissingEOSPenaltyOracle(oracle, penalty)

