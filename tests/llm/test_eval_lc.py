"""Length-controlled win rate on synthetic data with a known answer, and the missing-EOS penalty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from nashalign.llm.evaluate import (
    FinishedText,
    apply_missing_eos_penalty,
    length_controlled,
    missing_eos_penalized,
    summarize,
    tag_finished,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _simulate(rng, n_prompts, k, lc, coef, shift, bernoulli=True):
    """Length differences with mean ``shift`` (the policy writes longer answers) and outcomes from the LC model."""
    idx = np.repeat(np.arange(n_prompts), k)
    la = rng.poisson(40 + shift, size=idx.size).astype(float)
    lb = rng.poisson(40, size=idx.size).astype(float)
    d = la - lb
    x = np.tanh(d / d.std())
    p = 1 / (1 + np.exp(-(_logit(lc) + coef * x)))
    y = rng.binomial(1, p).astype(float) if bernoulli else p
    return y, la, lb, idx


def test_lc_recovers_exact_coefficients_from_noise_free_answers():
    rng = np.random.default_rng(0)
    y, la, lb, idx = _simulate(rng, 50, 4, lc=0.3, coef=2.0, shift=15, bernoulli=False)
    res = length_controlled(y, la, lb, idx)
    assert res.mean == pytest.approx(0.3, abs=1e-9)
    assert res.length_coef == pytest.approx(2.0, abs=1e-8)
    assert res.raw > 0.5  # the longer policy "wins" raw, but not at equal length
    assert res.ci_low <= res.mean <= res.ci_high


def test_lc_matches_a_generic_optimizer_and_covers_the_truth():
    rng = np.random.default_rng(1)
    y, la, lb, idx = _simulate(rng, 200, 4, lc=0.4, coef=1.5, shift=20)
    res = length_controlled(y, la, lb, idx)
    d = la - lb
    X = np.stack([np.ones_like(d), np.tanh(d / d.std())], 1)

    def nll(b):
        eta = X @ b
        return float(np.sum(np.logaddexp(0, eta) - y * eta))

    opt = minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10})
    assert res.mean == pytest.approx(1 / (1 + math.exp(-opt.x[0])), abs=1e-5)
    assert res.length_coef == pytest.approx(opt.x[1], abs=1e-4)
    assert abs(res.mean - 0.4) < 4 * res.stderr
    assert abs(res.raw - 0.4) > 0.1  # the raw win rate is confounded by length; LC is not


def test_lc_interval_has_nominal_coverage():
    rng = np.random.default_rng(2)
    hits, hits_raw = 0, 0
    reps = 200
    for _ in range(reps):
        y, la, lb, idx = _simulate(rng, 60, 3, lc=0.35, coef=1.0, shift=10)
        res = length_controlled(y, la, lb, idx, confidence=0.9)
        hits += res.ci_low <= 0.35 <= res.ci_high
        raw = summarize(torch.tensor(y), torch.tensor(idx), confidence=0.9)
        hits_raw += raw.ci_low <= 0.35 <= raw.ci_high
    assert 0.84 <= hits / reps <= 0.96  # 90% nominal; binomial sd over 200 reps is 2.1%
    assert hits_raw / reps < 0.5  # the length-confounded raw interval misses the truth


def test_lc_without_length_variation_is_the_logit_mean_and_edge_cases():
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    same = np.full(6, 10.0)
    res = length_controlled(y, same, same)
    assert res.mean == pytest.approx(y.mean(), abs=1e-12) and res.scale == 0.0 and res.length_coef == 0.0
    tiny = length_controlled([1.0, 0.5], [3, 1], [4, 3])  # two pairs, nearly equal tanh(d/s): not identified
    assert tiny.method == "undetermined" and math.isnan(tiny.mean)
    ones = length_controlled(np.ones(4), [1, 2, 3, 4], [2, 2, 2, 2])
    assert ones.mean == 1.0 and (ones.ci_low, ones.ci_high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="probabilities"):
        length_controlled([0.5, 1.5], [1, 2], [1, 1])
    with pytest.raises(ValueError, match="one entry per comparison"):
        length_controlled([0.5, 0.5], [1, 2, 3], [1, 1])


def test_lc_under_separation_uses_firths_penalised_likelihood():
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # the longer response always wins: no finite MLE
    la, lb = np.array([5, 6, 1, 1, 9, 2]), np.array([1, 1, 5, 6, 2, 9])  # differences +-4, +-5, +-7
    res = length_controlled(y, la, lb)
    assert res.method == "firth" and 0 < res.ci_low <= res.mean <= res.ci_high < 1
    d = (la - lb).astype(float)
    X = np.stack([np.ones(6), np.tanh(d / d.std())], 1)

    def neg_penalised(b):
        eta = X @ b
        mu = 1 / (1 + np.exp(-eta))
        info = (X * (mu * (1 - mu))[:, None]).T @ X
        return -(np.sum(y * eta - np.logaddexp(0, eta)) + 0.5 * np.linalg.slogdet(info)[1])

    opt = minimize(neg_penalised, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14})
    assert res.mean == pytest.approx(1 / (1 + math.exp(-opt.x[0])), abs=1e-5)
    assert res.length_coef == pytest.approx(opt.x[1], abs=1e-4)
    assert res.mean == pytest.approx(0.5, abs=1e-6)  # the data are symmetric about zero length difference


def test_missing_eos_penalty_values_and_consistency():
    p = torch.tensor([0.9, 0.2, 0.7, 0.4], dtype=torch.float64)
    fa = torch.tensor([False, True, False, True])
    fb = torch.tensor([True, False, False, True])
    out = apply_missing_eos_penalty(p, fa, fb, 1.0)
    assert out.tolist() == [0.0, 1.0, 0.7, 0.4]  # truncated first loses, truncated second loses, ties keep p
    half = apply_missing_eos_penalty(p, fa, fb, 0.5)
    assert half.tolist() == pytest.approx([0.4, 0.7, 0.7, 0.4])
    swapped = apply_missing_eos_penalty(1 - p, fb, fa, 0.5)
    assert (half + swapped).tolist() == pytest.approx([1.0] * 4)  # P' + P'^T = 1
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        apply_missing_eos_penalty(p, fa, fb, 2.0)


def test_missing_eos_wrapper_reads_tagged_texts():
    texts_a = tag_finished(["cut off", "done"], torch.tensor([False, True]))
    texts_b = ["fine", FinishedText("also cut", False)]
    assert isinstance(texts_a[0], str) and texts_a[0] == "cut off" and not texts_a[0].finished
    oracle = missing_eos_penalized(lambda x, a, b: torch.full((len(a),), 0.5, dtype=torch.float64), 1.0)
    assert oracle(["q", "q"], texts_a, texts_b).tolist() == [0.0, 1.0]
