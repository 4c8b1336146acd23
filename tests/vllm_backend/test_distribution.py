"""Same distribution, both backends: samples vs the EXACT enumerable distribution of the known-equilibrium task.

On :mod:`nashalign.llm.synthetic` every response is one of ``n`` valid words (canonical tokens + EOS) or
"invalid", so ``pi(y | x)`` is enumerable by teacher forcing (:func:`response_distribution`), and so is the
token-level geometric mixture ``pi^{1-w} mu^w`` (the product over tokens of :func:`mixture_logprobs`).  With a
fixed seed, ``N`` samples per prompt from each backend pass Pearson's chi-square test against the exact
distribution (``p > 0.01``, bins with expected count < 5 pooled); the same counts REJECT the wrong distribution
(the test has power).  ``pi`` is first moved away from ``mu`` so that the mixture differs from both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from nashalign.llm._decode import HFSampler

N = 400  # samples per prompt
W = 0.5  # mixture weight
SETTINGS = dict(max_new_tokens=4, temperature=1.0, top_p=1.0, top_k=0)


def pooled_chisquare(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's chi-square p-value, pooling bins whose expected count is below 5 (smallest first)."""
    counts, expected = np.asarray(counts, float), np.asarray(probs, float) * counts.sum()
    order = np.argsort(expected)
    c, e, pool_c, pool_e = [], [], 0.0, 0.0
    for i in order:
        if expected[i] < 5 or pool_e and pool_e < 5:
            pool_c, pool_e = pool_c + counts[i], pool_e + expected[i]
        else:
            c.append(counts[i])
            e.append(expected[i])
    if pool_e > 0:
        c.append(pool_c)
        e.append(pool_e)
    e_arr = np.asarray(e)
    return float(stats.chisquare(np.asarray(c), e_arr * np.sum(c) / e_arr.sum()).pvalue)


def classify(samples, policy, task) -> np.ndarray:
    """``(C, n + 1)`` counts: row ``c``, column ``j`` = samples of prompt ``c`` equal to valid word ``j``'s tokens + EOS."""
    C, n = task.num_prompts, task.num_classes
    words = policy.encode(
        task.prompts, [r for rs in task.responses for r in rs], prompt_index=torch.arange(C).repeat_interleave(n)
    )
    table = {}
    for row in range(C * n):
        ids = tuple(words.response_ids[row][words.response_mask[row].bool()].tolist())
        table[(row // n, ids)] = row % n
    counts = np.zeros((C, n + 1))
    for c, ids, m in zip(samples.prompt_index.tolist(), samples.response_ids, samples.response_mask):
        counts[c, table.get((c, tuple(ids[m.bool()].tolist())), n)] += 1
    return counts


def mixture_distribution(policy, task, w: float) -> np.ndarray:
    """Exact ``(C, n + 1)`` distribution of the token-level mixture sampler: prod_t mix(pi_t, mu_t)[y_t]."""
    from nashalign.llm._decode import mixture_logprobs, positions

    C, n = task.num_prompts, task.num_classes
    s = policy.encode(
        task.prompts, [r for rs in task.responses for r in rs], prompt_index=torch.arange(C).repeat_interleave(n)
    )
    ids = torch.cat([s.prompt_ids, s.response_ids], 1)
    mask = torch.cat([s.prompt_mask, s.response_mask], 1)
    lr = s.response_ids.shape[1]
    kw = dict(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
    with torch.no_grad():
        pi = policy.model(**kw).logits[:, -(lr + 1) : -1].float()
        with policy.reference() as ref:
            mu = ref(**kw).logits[:, -(lr + 1) : -1].float()
    logp = mixture_logprobs(pi, mu, w).gather(-1, s.response_ids[..., None]).squeeze(-1)
    valid = (logp * s.response_mask).sum(-1).double().exp().numpy().reshape(C, n)
    invalid = np.clip(1.0 - valid.sum(-1, keepdims=True), 0.0, None)
    return np.concatenate([valid, invalid], -1)


@pytest.fixture(scope="module")
def moved_policy(lm_dir, task):
    """The tiny LM with ``mu`` frozen, then moved part-way towards another distribution (so pi != mu)."""
    from nashalign.llm.policy import CausalLMPolicy
    from nashalign.llm.synthetic import build_task, warm_up

    policy = CausalLMPolicy.from_pretrained(lm_dir, device="cpu", use_chat_template=False)
    other = build_task(warmup_reference=[[0.2, 0.3, 0.5], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2]])
    warm_up(policy, other, steps=20, lr=1e-2)
    return policy


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_policy_samples_match_the_exact_distribution(backend, moved_policy, task, vllm_generator):
    from nashalign.llm.synthetic import response_distribution

    gen = HFSampler() if backend == "hf" else vllm_generator(moved_policy)
    samples = gen(moved_policy, task.prompts, N, **SETTINGS, generator=torch.Generator().manual_seed(1234))
    counts = classify(samples, moved_policy, task)
    exact = response_distribution(moved_policy, task)
    mu = response_distribution(moved_policy, task, model="reference")
    for c in range(task.num_prompts):
        assert pooled_chisquare(counts[c], exact[c]) > 0.01, (backend, c, counts[c], exact[c] * N)
    # power: the same counts reject mu (pi was moved away from it)
    assert min(pooled_chisquare(counts[c], mu[c]) for c in range(task.num_prompts)) < 0.01


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_mixture_samples_match_the_exact_mixture(backend, moved_policy, task, vllm_generator):
    """Nash-MD's opponent: under generation=vllm the mixture is drawn by the HF sampler (module docstring)."""
    from nashalign.llm.synthetic import response_distribution

    gen = HFSampler() if backend == "hf" else vllm_generator(moved_policy)
    samples = gen(moved_policy, task.prompts, N, **SETTINGS, mixture=W, generator=torch.Generator().manual_seed(99))
    counts = classify(samples, moved_policy, task)
    exact = mixture_distribution(moved_policy, task, W)
    assert np.all(exact >= 0) and np.allclose(exact.sum(-1), 1.0)
    for c in range(task.num_prompts):
        assert pooled_chisquare(counts[c], exact[c]) > 0.01, (backend, c, counts[c], exact[c] * N)
    pi = response_distribution(moved_policy, task)
    assert min(pooled_chisquare(counts[c], pi[c]) for c in range(task.num_prompts)) < 0.01  # not pi itself
