"""Win rates under an oracle, with confidence intervals, between policies loaded by path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nashalign.llm.evaluate import WinRate, summarize, win_rate


def test_summarize_normal_interval_over_prompt_means():
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0])
    index = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    wr = summarize(values, index, confidence=0.95)
    per_prompt = np.array([0.5, 1.0, 0.5, 0.0])
    se = per_prompt.std(ddof=1) / 2
    assert wr.mean == pytest.approx(0.5) and wr.stderr == pytest.approx(se)
    assert wr.ci_low == pytest.approx(max(0.0, 0.5 - 1.959964 * se), abs=1e-6)
    assert wr.ci_high == pytest.approx(min(1.0, 0.5 + 1.959964 * se), abs=1e-6)
    assert wr.n == 8 and wr.num_prompts == 4 and wr.per_prompt == tuple(per_prompt)
    # one prompt: the comparisons are the units
    one = summarize(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.zeros(4, dtype=torch.long))
    assert one.stderr == pytest.approx(np.std([1, 0, 1, 1], ddof=1) / 2)
    single = summarize(torch.tensor([1.0]), torch.tensor([0]))
    assert math.isnan(single.stderr) and (single.ci_low, single.ci_high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="probabilities"):
        summarize(torch.tensor([1.5]), torch.tensor([0]))


def test_win_rate_against_reference_and_by_path(synthetic_task, tiny_lm_dir, load_policy):
    task = synthetic_task
    oracle = task.oracle()
    pol = load_policy(tiny_lm_dir)
    # the policy against its own (frozen) reference: the same distribution, so 1/2 within the interval
    wr = win_rate(pol, "reference", task.prompts, oracle, k=64, max_new_tokens=4, seed=0)
    assert isinstance(wr, WinRate) and wr.n == 3 * 64 and wr.num_prompts == 3
    assert wr.ci_low <= 0.5 <= wr.ci_high and wr.ci_high - wr.ci_low < 0.3
    # a policy that always answers the best transitive response ("three") beats mu there
    from nashalign.llm.synthetic import warm_up

    pushed = load_policy(tiny_lm_dir)
    task_three = type(task)(
        prompts=task.prompts,
        responses=task.responses,
        matrices=task.matrices,
        warmup_reference=np.array([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]]),
        names=task.names,
    )
    warm_up(pushed, task_three, steps=60, lr=2e-2)
    wr2 = win_rate(pushed, tiny_lm_dir, task.prompts[2:], oracle, k=64, max_new_tokens=4, seed=1)
    # P(three > mu) = sum_y mu(y) P(three > y) with mu ~ (0.55, 0.3, 0.15): about 0.76
    assert wr2.ci_low > 0.6
    assert "CI" in str(wr2)


def test_win_rate_rejects_bad_oracle_output(synthetic_task, load_policy):
    pol = load_policy()
    with pytest.raises(ValueError, match="shape"):
        win_rate(pol, "reference", synthetic_task.prompts, lambda x, a, b: torch.zeros(1), k=2, max_new_tokens=2)
    with pytest.raises(TypeError, match="CausalLMPolicy or a checkpoint"):
        win_rate(pol, 3, synthetic_task.prompts, synthetic_task.oracle(), k=2, max_new_tokens=2)
