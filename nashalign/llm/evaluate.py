"""Head-to-head win rates of language-model policies under a preference oracle, with a confidence interval.

``win_rate(a, b, prompts, oracle, k)`` samples ``k`` responses per prompt from each policy, pairs them
row by row (sample ``j`` of ``a`` against sample ``j`` of ``b`` on the same prompt), asks the oracle
for ``P(a's response > b's response | prompt)`` and averages.  Oracle answers may be probabilities or
Bernoulli outcomes in ``{0, 1}``; either way the estimate is unbiased for ``P(pi_a > pi_b)`` over the
prompt set.

Confidence interval: normal approximation over PER-PROMPT means (prompts are the independent units;
the ``k`` comparisons of one prompt share it and are correlated), ``mean +- z * sd(prompt means) /
sqrt(#prompts)``, clipped to ``[0, 1]``.  With a single prompt the ``k`` comparisons are the units
instead.  (No Wilson interval: it is for i.i.d. Bernoulli outcomes, which clustered, possibly
fractional answers are not.)

Length-controlled win rate (:func:`length_controlled`, defined in :mod:`nashalign.llm.lc_winrate`): the answers
are regressed on the normalised length difference and the win rate is reported at zero length difference,
``LC = sigmoid(beta_0)``, with a cluster-robust interval.

Missing-EOS penalty (:func:`apply_missing_eos_penalty` and its oracle wrapper, defined in
:mod:`nashalign.llm.eos_penalty`): a response cut off at ``max_new_tokens`` (no EOS) loses,
``P'(a ≻ b) = clip(P(a ≻ b) - lambda (c_a - c_b), 0, 1)``.

Both are re-exported here, so every name of the evaluation API imports from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from nashalign.llm.eos_penalty import (
    FinishedText,
    MissingEOSPenaltyOracle,
    _check_penalty,
    apply_missing_eos_penalty,
    missing_eos_penalized,
    tag_finished,
)
from nashalign.llm.lc_winrate import LengthControlledWinRate, length_controlled

__all__ = [
    "WinRate",
    "win_rate",
    "summarize",
    "LengthControlledWinRate",
    "length_controlled",
    "Comparison",
    "compare",
    "apply_missing_eos_penalty",
    "FinishedText",
    "tag_finished",
    "MissingEOSPenaltyOracle",
    "missing_eos_penalized",
    "heldout_metrics",
]


@dataclass(frozen=True)
class WinRate:
    """Estimated ``P(pi_a > pi_b)`` with its normal-approximation confidence interval.

    Attributes:
        mean: the estimate (ties count 1/2).
        stderr: standard error of the mean (over per-prompt means, see the module docstring).
        ci_low, ci_high: the ``confidence`` interval, clipped to ``[0, 1]``.
        n: number of comparisons (``#prompts * k``).
        num_prompts: number of prompts.
        confidence: the interval's nominal coverage.
        per_prompt: ``(#prompts,)`` mean preference per prompt.
    """

    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    num_prompts: int = 0
    confidence: float = 0.95
    per_prompt: tuple[float, ...] = ()

    def as_dict(self, prefix: str = "win_rate") -> dict[str, float]:
        return {
            prefix: self.mean,
            f"{prefix}/stderr": self.stderr,
            f"{prefix}/ci_low": self.ci_low,
            f"{prefix}/ci_high": self.ci_high,
            f"{prefix}/n": float(self.n),
        }

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return f"{self.mean:.3f} ± {self.stderr:.3f} ({pct}% CI [{self.ci_low:.3f}, {self.ci_high:.3f}], n={self.n})"


def _as_policy(p: Any, label: str, **load_kwargs: Any) -> Any:
    from nashalign.llm.policy import CausalLMPolicy

    if isinstance(p, CausalLMPolicy):
        return p
    if isinstance(p, str):
        return CausalLMPolicy.from_pretrained(p, **load_kwargs)
    raise TypeError(f"{label} must be a CausalLMPolicy or a checkpoint path/Hub id; got {type(p).__name__}.")


def summarize(values: Any, prompt_index: Any, confidence: float = 0.95) -> WinRate:
    """The :class:`WinRate` of per-comparison preferences ``values`` ``(N,)`` grouped by ``prompt_index``."""
    v = np.asarray(torch.as_tensor(values).detach().double().cpu(), dtype=np.float64).reshape(-1)
    idx = np.asarray(torch.as_tensor(prompt_index).cpu(), dtype=np.int64).reshape(-1)
    if v.shape != idx.shape or v.size == 0:
        raise ValueError(f"need one prompt index per value and at least one value; got {v.shape} and {idx.shape}.")
    if not np.isfinite(v).all() or v.min() < 0 or v.max() > 1:
        raise ValueError(f"oracle answers must be probabilities in [0, 1]; got range [{v.min()}, {v.max()}].")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    groups = np.unique(idx)
    per_prompt = np.array([v[idx == g].mean() for g in groups])  # (#prompts,)
    units = per_prompt if len(groups) >= 2 else v
    mean = float(v.mean()) if len(groups) < 2 else float(per_prompt.mean())
    stderr = float(units.std(ddof=1) / np.sqrt(len(units))) if len(units) >= 2 else float("nan")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * stderr if np.isfinite(stderr) else float("inf")
    return WinRate(
        mean=mean,
        stderr=stderr,
        ci_low=max(0.0, mean - half),
        ci_high=min(1.0, mean + half),
        n=int(v.size),
        num_prompts=len(groups),
        confidence=confidence,
        per_prompt=tuple(float(x) for x in per_prompt),
    )


def win_rate(
    policy_a: Any,
    policy_b: Any,
    prompts: Sequence[str],
    oracle: Callable[..., Any],
    k: int = 4,
    **kwargs: Any,
) -> WinRate:
    """``P(pi_a > pi_b)`` over ``prompts`` under ``oracle``, from ``k`` paired samples per prompt.

    Takes the arguments of :func:`compare` and returns its ``win_rate`` (use :func:`compare` for the
    length-controlled win rate too).
    """
    return compare(policy_a, policy_b, prompts, oracle, k, **kwargs).win_rate


# ================================================================================ comparisons with lengths
@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` measured: the win rate, the length-controlled win rate and the raw answers.

    Attributes:
        win_rate: :class:`WinRate` (after the missing-EOS penalty, if any).
        length_controlled: :class:`LengthControlledWinRate`.
        p: ``(N,)`` the answers used; prompt_index: ``(N,)``; len_a, len_b: ``(N,)`` response lengths in tokens
            (EOS excluded); finished_a, finished_b: ``(N,)`` bool, whether each response ended with EOS.
    """

    win_rate: WinRate
    length_controlled: LengthControlledWinRate
    p: torch.Tensor
    prompt_index: torch.Tensor
    len_a: torch.Tensor
    len_b: torch.Tensor
    finished_a: torch.Tensor
    finished_b: torch.Tensor

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics: ``{prefix}win_rate...``, ``{prefix}lc_win_rate...``, ``{prefix}truncated_a/b``."""
        out = self.win_rate.as_dict(f"{prefix}win_rate")
        out.update(self.length_controlled.as_dict(f"{prefix}lc_win_rate"))
        out[f"{prefix}truncated_a"] = float((~self.finished_a).float().mean())
        out[f"{prefix}truncated_b"] = float((~self.finished_b).float().mean())
        return out


def compare(
    policy_a: Any,
    policy_b: Any,
    prompts: Sequence[str],
    oracle: Callable[..., Any],
    k: int = 4,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    do_sample: bool = True,
    seed: int | None = 0,
    batch_size: int | None = None,
    confidence: float = 0.95,
    missing_eos_penalty: float | None = None,
    load_kwargs: dict[str, Any] | None = None,
) -> Comparison:
    """Win rate and length-controlled win rate of ``pi_a`` against ``pi_b`` from ``k`` paired samples per prompt.

    Args:
        policy_a: a :class:`~nashalign.llm.policy.CausalLMPolicy` or a checkpoint path / Hub id
            (loaded with ``CausalLMPolicy.from_pretrained(path, **load_kwargs)``).
        policy_b: the same kinds, or ``"reference"``: ``policy_a``'s reference ``mu``.
        prompts: the evaluation prompts (raw strings; each policy applies its own chat template).
        oracle: ``oracle(prompts, first, second) -> (B,)`` with ``P(first > second | prompt)``.
        k: samples per prompt from each policy.
        max_new_tokens: sampling setting for both policies.
        temperature: sampling setting for both policies.
        top_p: sampling setting for both policies.
        top_k: sampling setting for both policies.
        do_sample: sampling setting for both policies.
        seed: sampling seed (``a`` uses ``seed``, ``b`` uses ``seed + 1``); ``None`` = global RNG.
        batch_size: rows decoded at once.
        confidence: coverage of the intervals.
        missing_eos_penalty: ``lambda`` in ``(0, 1]``: responses cut off at ``max_new_tokens`` lose
            (:func:`apply_missing_eos_penalty`); None: no penalty.
    """
    load_kwargs = dict(load_kwargs or {})
    _check_penalty(missing_eos_penalty)
    a = _as_policy(policy_a, "policy_a", **load_kwargs)
    gen = dict(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        do_sample=do_sample,
        batch_size=batch_size,
    )
    sa = a.generate(prompts, k, seed=seed, **gen)
    seed_b = None if seed is None else seed + 1
    if isinstance(policy_b, str) and policy_b == "reference":
        sb = a.generate(prompts, k, seed=seed_b, model_override="reference", **gen)
    else:
        b = _as_policy(policy_b, "policy_b", **load_kwargs)
        sb = b.generate(prompts, k, seed=seed_b, **gen)
    contexts = [prompts[i] for i in sa.prompt_index.tolist()]
    p = oracle(contexts, list(sa.texts), list(sb.texts))  # (N,)
    p = torch.as_tensor(p)
    if p.shape != (len(sa),):
        raise ValueError(
            f"the oracle returned shape {tuple(p.shape)} for {len(sa)} comparisons; expected ({len(sa)},)."
        )
    fa, fb = sa.finished.cpu().bool(), sb.finished.cpu().bool()
    if missing_eos_penalty:
        p = apply_missing_eos_penalty(p, fa, fb, missing_eos_penalty)
    len_a = sa.response_lengths.cpu() - fa.long()
    len_b = sb.response_lengths.cpu() - fb.long()
    idx = sa.prompt_index.cpu()
    return Comparison(
        win_rate=summarize(p, idx, confidence=confidence),
        length_controlled=length_controlled(p, len_a, len_b, idx, confidence=confidence),
        p=p.detach().cpu(),
        prompt_index=idx,
        len_a=len_a,
        len_b=len_b,
        finished_a=fa,
        finished_b=fb,
    )


# ================================================================================ evaluation during training
def heldout_metrics(
    policy: Any,
    prompts: Sequence[str],
    oracle: Callable[..., Any],
    *,
    k: int = 2,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    missing_eos_penalty: float | None = None,
    prefix: str = "eval/",
) -> dict[str, float]:
    """Win rate and LC win rate of ``policy`` against its reference on held-out ``prompts`` (flat metrics).

    What the trainer logs every ``eval_every`` iterations when ``eval_prompts`` is set: ``eval/win_rate``,
    ``eval/lc_win_rate`` (with their intervals), ``eval/truncated_a`` (share of the policy's responses cut
    off) and ``eval/queries``.  A fixed ``seed`` draws from a local generator (the training RNG is untouched).
    """
    result = compare(
        policy,
        "reference",
        list(prompts),
        oracle,
        k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        missing_eos_penalty=missing_eos_penalty,
    )
    out = result.as_dict(prefix)
    out[f"{prefix}queries"] = float(len(result.p))
    return out
