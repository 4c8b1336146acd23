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

Length-controlled win rate (AlpacaEval-2 style, :func:`length_controlled`): response length is the first
confounder of every preference judge, so the answers ``y_i`` are regressed on the normalised length difference

    x_i = tanh((len(a_i) - len(b_i)) / s),   s = sd(len(a) - len(b)),
    P(a_i ≻ b_i) = sigmoid(beta_0 + beta_1 x_i)          (logistic regression; fractional y_i allowed),

and the win rate is reported at zero length difference: ``LC = sigmoid(beta_0)``.  Its interval comes from
the cluster-robust (sandwich) covariance of the maximum-likelihood fit, clustered by prompt, mapped through
the sigmoid.  AlpacaEval-2 also fits a per-instruction difficulty term; with the baseline fixed and a few
samples per prompt that term is absorbed here by clustering, not fitted.

Missing-EOS penalty (:func:`apply_missing_eos_penalty`): a response cut off at ``max_new_tokens`` (no EOS)
loses: ``P'(a ≻ b) = clip(P(a ≻ b) - lambda (c_a - c_b), 0, 1)`` with ``c = 1`` for a truncated response, so
``lambda = 1`` makes a truncated response lose to every finished one, and ``P' + P'^T = 1`` still holds.
Truncation is the policy's own ``finished`` flag (EOS among the generated tokens only, never the prompt's:
the bug TRL had, trl#6802).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

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


# ================================================================================ length-controlled win rate
@dataclass(frozen=True)
class LengthControlledWinRate:
    """``LC = sigmoid(beta_0)``: the win rate predicted at zero length difference (module docstring).

    Attributes:
        mean: LC; stderr: its delta-method standard error ``LC (1 - LC) se(beta_0)``.
        ci_low, ci_high: ``sigmoid(beta_0 -+ z se(beta_0))`` (cluster-robust by prompt).
        raw: the plain mean answer; length_coef, length_coef_stderr: ``beta_1`` and its standard error.
        scale: ``s``, the length differences' standard deviation (0: no length variation, ``beta_1`` not fitted).
        n, num_prompts, confidence: as in :class:`WinRate`.
        method: ``"mle"``, or ``"firth"`` when the answers are separated by length and the maximum-likelihood
            estimate does not exist (Firth's penalised likelihood keeps it finite); ``"constant"`` when every
            answer is 0 or every answer is 1; ``"undetermined"`` (every number NaN) when neither fit converges,
            e.g. on a handful of comparisons with nearly equal length differences.
    """

    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    raw: float
    length_coef: float
    length_coef_stderr: float
    scale: float
    n: int
    num_prompts: int
    confidence: float = 0.95
    method: str = "mle"

    def as_dict(self, prefix: str = "lc_win_rate") -> dict[str, float]:
        return {
            prefix: self.mean,
            f"{prefix}/stderr": self.stderr,
            f"{prefix}/ci_low": self.ci_low,
            f"{prefix}/ci_high": self.ci_high,
            f"{prefix}/length_coef": self.length_coef,
        }

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return (
            f"LC {self.mean:.3f} ({pct}% CI [{self.ci_low:.3f}, {self.ci_high:.3f}]; raw {self.raw:.3f}, "
            f"length coef {self.length_coef:+.3f} ± {self.length_coef_stderr:.3f}, n={self.n})"
        )


def _sigmoid(z: np.ndarray | float) -> Any:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _fit_logistic(
    X: np.ndarray, y: np.ndarray, firth: bool = False, max_iter: int = 200, tol: float = 1e-10
) -> np.ndarray:
    """``beta`` of ``P(y=1) = sigmoid(X beta)`` with fractional ``y``: maximum likelihood, or Firth's penalised
    likelihood ``l(beta) + log det I(beta) / 2`` (finite under separation).  Newton / Fisher scoring with step
    halving; raises ``ValueError`` when it does not converge to finite values."""
    beta = np.zeros(X.shape[1])

    def objective(b: np.ndarray) -> float:
        eta = X @ b
        ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        if firth:
            mu = _sigmoid(eta)
            sign, logdet = np.linalg.slogdet((X * (mu * (1 - mu))[:, None]).T @ X)
            ll += 0.5 * logdet if sign > 0 else -np.inf
        return ll

    obj = objective(beta)
    for _ in range(max_iter):
        mu = _sigmoid(X @ beta)
        info = (X * (mu * (1 - mu))[:, None]).T @ X
        try:
            inv = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            break
        resid = y - mu
        if firth:  # Firth's modified score: y - mu + h (1/2 - mu), h the hat-matrix diagonal
            h = mu * (1 - mu) * np.einsum("ij,jk,ik->i", X, inv, X)
            resid = resid + h * (0.5 - mu)
        step = inv @ (X.T @ resid)
        t = 1.0
        while t > 1e-8:
            cand = beta + t * step
            obj_c = objective(cand)
            if obj_c >= obj - 1e-12:
                break
            t /= 2
        beta, obj = cand, obj_c
        if np.max(np.abs(t * step)) < tol and np.all(np.abs(beta) < (1e6 if firth else 30)):
            return beta
    raise ValueError("the length-controlled regression did not converge to finite coefficients.")


def _sandwich(X: np.ndarray, y: np.ndarray, beta: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cluster-robust covariance ``H^{-1} (G/(G-1) sum_g s_g s_g^T) H^{-1}`` of the fit (clusters ``groups``)."""
    mu = _sigmoid(X @ beta)
    bread = np.linalg.inv((X * (mu * (1 - mu))[:, None]).T @ X)
    scores = X * (y - mu)[:, None]  # (N, p)
    uniq, inv = np.unique(groups, return_inverse=True)
    per_group = np.zeros((len(uniq), X.shape[1]))
    np.add.at(per_group, inv, scores)
    G = len(uniq)
    meat = per_group.T @ per_group * (G / (G - 1) if G > 1 else 1.0)
    return bread @ meat @ bread


def length_controlled(
    values: Any,
    len_a: Any,
    len_b: Any,
    prompt_index: Any | None = None,
    confidence: float = 0.95,
) -> LengthControlledWinRate:
    """The length-controlled win rate of answers ``values`` ``(N,)`` with response lengths ``len_a``, ``len_b``.

    Fits ``P(a ≻ b) = sigmoid(beta_0 + beta_1 tanh((len_a - len_b) / s))`` by maximum likelihood and returns
    ``sigmoid(beta_0)`` with a cluster-robust interval (clusters: ``prompt_index``; None: every comparison its
    own).  All answers 0 or all 1 give ``LC`` = that value with an undefined interval (``[0, 1]``); answers
    separated by length (no finite maximum-likelihood estimate) are fitted with Firth's penalty instead; when
    that fails too the result is NaN (``method="undetermined"``) rather than an error, so evaluation never stops.
    """
    y = np.asarray(torch.as_tensor(values).detach().double().cpu(), dtype=np.float64).reshape(-1)
    la = np.asarray(torch.as_tensor(len_a).detach().double().cpu(), dtype=np.float64).reshape(-1)
    lb = np.asarray(torch.as_tensor(len_b).detach().double().cpu(), dtype=np.float64).reshape(-1)
    groups = np.arange(y.size) if prompt_index is None else np.asarray(torch.as_tensor(prompt_index).cpu()).reshape(-1)
    if not (y.shape == la.shape == lb.shape == groups.shape) or y.size < 2:
        raise ValueError(
            f"values, len_a, len_b and prompt_index need one entry per comparison (at least 2); got shapes "
            f"{y.shape}, {la.shape}, {lb.shape}, {groups.shape}."
        )
    if not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        raise ValueError(f"values must be probabilities in [0, 1]; got range [{y.min()}, {y.max()}].")
    if not (np.isfinite(la).all() and np.isfinite(lb).all()):
        raise ValueError("len_a and len_b must be finite lengths.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    d = la - lb
    scale = float(d.std())
    common = dict(raw=float(y.mean()), n=int(y.size), num_prompts=len(np.unique(groups)), confidence=confidence)
    if y.min() == y.max() and y[0] in (0.0, 1.0):
        nan = float("nan")
        return LengthControlledWinRate(float(y[0]), nan, 0.0, 1.0, length_coef=0.0, length_coef_stderr=nan,
                                       scale=scale, method="constant", **common)  # fmt: skip
    cols = [np.ones_like(y)] + ([np.tanh(d / scale)] if scale > 0 else [])
    X = np.stack(cols, axis=1)
    try:
        beta, method = _fit_logistic(X, y), "mle"
    except ValueError:  # (quasi-)separation, e.g. the longer response always wins: Firth's finite estimate
        try:
            beta, method = _fit_logistic(X, y, firth=True), "firth"
        except ValueError:  # e.g. as many distinct lengths as coefficients: LC is not identified
            nan = float("nan")
            return LengthControlledWinRate(nan, nan, nan, nan, length_coef=nan, length_coef_stderr=nan,
                                           scale=scale, method="undetermined", **common)  # fmt: skip
    cov = _sandwich(X, y, beta, groups)
    se0 = float(np.sqrt(max(cov[0, 0], 0.0)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    lc = float(_sigmoid(beta[0]))
    return LengthControlledWinRate(
        mean=lc,
        stderr=lc * (1 - lc) * se0,
        ci_low=float(_sigmoid(beta[0] - z * se0)),
        ci_high=float(_sigmoid(beta[0] + z * se0)),
        length_coef=float(beta[1]) if scale > 0 else 0.0,
        length_coef_stderr=float(np.sqrt(max(cov[1, 1], 0.0))) if scale > 0 else float("nan"),
        scale=scale,
        method=method,
        **common,
    )


# ================================================================================ missing-EOS penalty
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
