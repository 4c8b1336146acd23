"""Length-controlled win rate (AlpacaEval-2 style): the win rate predicted at zero length difference.

Response length is the first confounder of every preference judge, so the answers ``y_i`` are regressed on
the normalised length difference

    x_i = tanh((len(a_i) - len(b_i)) / s),   s = sd(len(a) - len(b)),
    P(a_i ≻ b_i) = sigmoid(beta_0 + beta_1 x_i)          (logistic regression; fractional y_i allowed),

and the win rate is reported at zero length difference: ``LC = sigmoid(beta_0)``.  Its interval comes from
the cluster-robust (sandwich) covariance of the maximum-likelihood fit, clustered by prompt, mapped through
the sigmoid.  AlpacaEval-2 also fits a per-instruction difficulty term; with the baseline fixed and a few
samples per prompt that term is absorbed here by clustering, not fitted.  :func:`length_controlled` is
re-exported by :mod:`nashalign.llm.evaluate`, whose :func:`~nashalign.llm.evaluate.compare` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

__all__ = ["LengthControlledWinRate", "length_controlled"]


@dataclass(frozen=True)
class LengthControlledWinRate:
    """``LC = sigmoid(beta_0)``: the win rate predicted at zero length difference (module docstring).

    Attributes:
        mean: LC; stderr: its delta-method standard error ``LC (1 - LC) se(beta_0)``.
        ci_low, ci_high: ``sigmoid(beta_0 -+ z se(beta_0))`` (cluster-robust by prompt).
        raw: the plain mean answer; length_coef, length_coef_stderr: ``beta_1`` and its standard error.
        scale: ``s``, the length differences' standard deviation (0: no length variation, ``beta_1`` not fitted).
        n, num_prompts, confidence: as in :class:`~nashalign.llm.evaluate.WinRate`.
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

