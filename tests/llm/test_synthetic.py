"""The known-equilibrium LM benchmark: exact enumeration, extended game, exact evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nashalign.llm.synthetic import (
    ExactEvaluator,
    SyntheticTask,
    build_task,
    build_task_tokenizer,
    build_tiny_policy,
    evaluate_exact,
    extended_game,
    response_distribution,
)

TAU = 0.1


def test_task_and_oracle_agree(synthetic_task):
    task = synthetic_task
    assert task.num_prompts == 3 and task.num_classes == 3
    oracle = task.oracle()
    for c, (prompt, rs) in enumerate(zip(task.prompts, task.responses)):
        firsts = [a for a in rs for _ in rs] + ["bogus", rs[0], "bogus"]
        seconds = [b for _ in rs for b in rs] + [rs[1], "bogus", "junk"]
        got = oracle([prompt] * len(firsts), firsts, seconds).double().numpy()
        want = np.concatenate([task.matrices[c].reshape(-1), [0.0, 1.0, 0.5]])
        np.testing.assert_allclose(got, want, atol=1e-12)
    # the population game is intransitive with a mixed equilibrium; the transitive one has a pure one
    P = task.matrices[1]
    assert P[0, 1] > 0.5 and P[1, 2] > 0.5 and P[2, 0] > 0.5
    with pytest.raises(ValueError, match="unknown synthetic games"):
        build_task(["chess"])
    with pytest.raises(ValueError, match="same number"):
        SyntheticTask(["a", "b"], [("x", "y"), ("x",)], np.full((2, 2, 2), 0.5), np.full((2, 2), 0.5))


def test_tokenizer_is_deterministic_and_words_are_single_tokens(synthetic_task):
    t1, t2 = build_task_tokenizer(synthetic_task), build_task_tokenizer(synthetic_task)
    assert t1.get_vocab() == t2.get_vocab()
    for rs in synthetic_task.responses:
        for r in rs:
            assert len(t1(r, add_special_tokens=False)["input_ids"]) == 1, r


def test_warm_up_is_seed_deterministic(synthetic_task):
    from nashalign.llm.tiny import build_causal_lm

    a = build_tiny_policy(synthetic_task, seed=3, warmup_steps=5)
    b = build_tiny_policy(synthetic_task, seed=3, warmup_steps=5)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    init = build_causal_lm(a.tokenizer, seed=3).state_dict()
    assert not all(torch.equal(sa[k], init[k]) for k in sa)  # the warm-up moved the weights


def test_warmed_up_mu_is_nontrivial(synthetic_task, synthetic_mu):
    mu = synthetic_mu
    assert mu.shape == (3, 4)
    np.testing.assert_allclose(mu.sum(-1), 1.0, atol=1e-12)
    valid = mu[:, :3] / mu[:, :3].sum(-1, keepdims=True)
    assert valid.max() < 0.9 and valid.min() > 0.02
    assert mu[:, 3].max() < 0.2
    # it approximates the warm-up target (0.6, 0.3, 0.1)-like rows
    assert np.abs(valid - synthetic_task.warmup_reference).max() < 0.1


def test_exact_distribution_matches_sampling(load_policy, synthetic_task, synthetic_mu):
    pol = load_policy()
    k = 300
    s = pol.generate(synthetic_task.prompts, k, max_new_tokens=4, seed=0)
    for c, rs in enumerate(synthetic_task.responses):
        texts = s.texts[c * k : (c + 1) * k]
        freq = np.array([sum(t == r for t in texts) for r in rs] + [sum(t not in rs for t in texts)]) / k
        # 300 draws: 4 standard errors of a proportion near 0.5 is 0.115
        assert np.abs(freq - synthetic_mu[c]).max() < 0.1, (freq, synthetic_mu[c])


def test_response_distribution_reference_equals_policy_before_training(load_policy, synthetic_task, synthetic_mu):
    pol = load_policy(lora=dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    np.testing.assert_allclose(response_distribution(pol, synthetic_task, model="reference"), synthetic_mu, atol=1e-6)


def test_extended_game_structure_and_fixed_point(synthetic_task, synthetic_mu):
    from nashalign.equilibrium import solve_regularized_nash

    g = extended_game(synthetic_task, synthetic_mu)
    P = np.asarray(g.P)
    assert P.shape == (3, 4, 4)
    np.testing.assert_array_equal(P[:, :3, :3], synthetic_task.matrices)
    assert (P[:, :3, 3] == 1).all() and (P[:, 3, :3] == 0).all() and (P[:, 3, 3] == 0.5).all()
    pi = np.asarray(solve_regularized_nash(g, TAU))
    br = synthetic_mu * np.exp(np.einsum("cij,cj->ci", P, pi) / TAU)
    br /= br.sum(-1, keepdims=True)
    assert np.abs(np.log(pi) - np.log(br)).max() < 1e-9  # pi*_tau = BR_tau(pi*_tau)
    assert pi[:, 3].max() < 1e-3  # the invalid class is nearly never played at equilibrium
    with pytest.raises(ValueError, match="valid classes then the invalid"):
        extended_game(synthetic_task, synthetic_mu[:, :3])


def test_evaluate_exact_math_on_hand_made_distributions(synthetic_task, synthetic_mu):
    ev = ExactEvaluator(synthetic_task, TAU, synthetic_mu)
    P = np.asarray(ev.game.P)
    # at the target: zero regularised exploitability and zero KL
    at_target = ev(ev.target)
    assert at_target.reg_exploitability.max() < 1e-12 and at_target.kl_target.max() < 1e-12
    # a hand-made distribution with invalid mass, checked against the formulas
    q = np.array([[0.5, 0.2, 0.1, 0.2], [0.3, 0.3, 0.3, 0.1], [0.1, 0.1, 0.7, 0.1]])
    e = ev(q)
    win = np.einsum("cij,cj->ci", P, q)  # P(y > q)
    np.testing.assert_allclose(e.exploitability, win.max(-1) - 0.5, atol=1e-12)
    br = synthetic_mu * np.exp(win / TAU)
    br /= br.sum(-1, keepdims=True)
    np.testing.assert_allclose(e.reg_exploitability, TAU * (q * np.log(q / br)).sum(-1), atol=1e-12)
    np.testing.assert_allclose(e.kl_target, (ev.target * np.log(ev.target / q)).sum(-1), atol=1e-12)
    np.testing.assert_allclose(e.invalid_mass, q[:, 3])
    d = e.as_dict()
    assert d["exploitability"] == pytest.approx(e.exploitability.mean())
    assert d["kl_target/rps"] == pytest.approx(e.kl_target[0])
    # invalid mass makes a policy exploitable: the RPS equilibrium with 20% moved to invalid
    nash = np.array([[1 / 3, 1 / 3, 1 / 3, 0.0]] * 3)
    leaky = nash * 0.8 + np.array([0, 0, 0, 0.2])
    assert ev(leaky).exploitability[0] == pytest.approx(0.8 * 0.5 + 0.2 * 1.0 - 0.5)
    # the one-shot function with a precomputed target gives the same numbers
    e2 = evaluate_exact(q, synthetic_task, TAU, synthetic_mu, target=ev.target)
    np.testing.assert_allclose(e2.kl_target, e.kl_target)
    with pytest.raises(ValueError, match="shape"):
        ev(q[:, :3])


def test_evaluate_exact_on_the_warmed_up_lm(load_policy, synthetic_task, synthetic_mu):
    e = evaluate_exact(load_policy(), synthetic_task, TAU, synthetic_mu)
    np.testing.assert_allclose(e.distribution, synthetic_mu, atol=1e-6)
    # the policy IS mu: its regularised exploitability is tau KL(mu || BR_tau(mu)) > 0, and it is exploitable
    assert (e.reg_exploitability > 1e-3).all() and (e.exploitability > 0.1).all()
    assert e.mean_invalid_mass == pytest.approx(synthetic_mu[:, 3].mean(), abs=1e-6)
