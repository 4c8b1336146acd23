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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

__all__ = ["WinRate", "win_rate"]


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
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    do_sample: bool = True,
    seed: int | None = 0,
    batch_size: int | None = None,
    confidence: float = 0.95,
    load_kwargs: dict[str, Any] | None = None,
) -> WinRate:
    """``P(pi_a > pi_b)`` over ``prompts`` under ``oracle``, from ``k`` paired samples per prompt.

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
        confidence: coverage of the interval.
    """
    load_kwargs = dict(load_kwargs or {})
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
    return summarize(p, sa.prompt_index, confidence=confidence)
