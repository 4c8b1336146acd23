"""Metrics: exploitability, duality gaps, KL, win rates -- values, identities, shapes, backends, errors."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy.special import logsumexp, rel_entr

from nashalign import _xp, metrics
from nashalign.equilibrium import solve_regularized_nash
from nashalign.game import PreferenceGame
from nashalign.games import random_game, rock_paper_scissors
from nashalign.metrics import duality_gap, exploitability, kl_divergence, win_rate

PURE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def best_response_value_cvxpy(w: np.ndarray, mu: np.ndarray, tau: float) -> float:
    """``max_pi <pi, w> - tau KL(pi || mu)`` over the simplex on ``supp(mu)``, solved by cvxpy (exp cone)."""
    s = mu > 0
    x = cp.Variable(int(s.sum()), nonneg=True)
    prob = cp.Problem(cp.Maximize(x @ w[s] - tau * cp.sum(cp.rel_entr(x, mu[s]))), [cp.sum(x) == 1])
    prob.solve(solver=cp.CLARABEL)
    return float(prob.value)


def best_response_value_closed(w: np.ndarray, mu: np.ndarray, tau: float) -> float:
    """The same maximum in closed form (Gibbs variational principle): ``tau log sum_y mu(y) exp(w(y)/tau)``."""
    s = mu > 0
    return float(tau * logsumexp(np.log(mu[s]) + w[s] / tau))


def kl_np(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(rel_entr(p, q)))


@pytest.mark.parametrize("pure", PURE)
def test_pure_strategies_in_rps_are_maximally_exploitable(pure):
    assert exploitability(rock_paper_scissors(), pure) == 0.5
    assert duality_gap(rock_paper_scissors(), pure) == 1.0


def test_uniform_is_unexploitable_in_rps():
    assert exploitability(rock_paper_scissors(), np.full(3, 1 / 3)) == pytest.approx(0.0, abs=1e-15)
    assert exploitability(rock_paper_scissors(eps=0.3), [0.5, 0.5, 0.0]) == pytest.approx(0.3 / 4)


def test_symmetric_duality_gap_is_twice_exploitability(rng):
    g = random_game(7, num_contexts=4, seed=2)
    pi = rng.dirichlet(np.ones(7), size=4)
    np.testing.assert_allclose(duality_gap(g, pi), 2 * exploitability(g, pi), atol=1e-15)
    for tau in (0.05, 1.0):
        np.testing.assert_allclose(duality_gap(g, pi, tau=tau), 2 * exploitability(g, pi, tau=tau), rtol=1e-10)


def test_unregularized_gap_formula_for_profiles(rng):
    g = random_game(5, seed=4)
    p1, p2 = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    P = g.P[0]
    assert duality_gap(g, p1, p2) == pytest.approx((P @ p2).max() - (p1 @ P).min(), abs=1e-15)
    assert duality_gap(g, p1, p2) >= 0


def test_regularized_exploitability_matches_spec_lse_form(rng):
    """DG_tau(pi)/2 = tau LSE(log mu + P pi/tau) + tau KL(pi||mu) - 1/2 (SPEC 1(c))."""
    mu = rng.dirichlet(np.ones(6))
    g = random_game(6, seed=5, ref=mu)
    pi = rng.dirichlet(np.ones(6))
    tau = 0.2
    lse = np.log(np.sum(mu * np.exp(g.P[0] @ pi / tau)))
    expect = tau * lse + tau * np.sum(pi * np.log(pi / mu)) - 0.5
    assert exploitability(g, pi, tau=tau) == pytest.approx(expect, rel=1e-10)
    br = mu * np.exp(g.P[0] @ pi / tau)
    br /= br.sum()
    assert exploitability(g, pi, tau=tau) == pytest.approx(tau * np.sum(pi * np.log(pi / br)), rel=1e-10)


def test_regularized_exploitability_vanishes_at_the_regularized_equilibrium():
    g = random_game(6, seed=6, ref="random")
    pi = solve_regularized_nash(g, 0.1)
    assert 0 <= exploitability(g, pi, tau=0.1) < 1e-14
    assert exploitability(g, g.ref[0], tau=0.1) > 1e-4
    # at pi = mu the KL term vanishes: DG_tau(mu)/2 = max_pi [P(pi > mu) - tau KL(pi||mu)] - 1/2
    mu = g.ref[0]
    expect = best_response_value_closed(g.P[0] @ mu, mu, 0.1) - 0.5
    assert exploitability(g, mu, tau=0.1) == pytest.approx(expect, rel=1e-12)
    assert exploitability(g, mu, tau=0.1) == pytest.approx(best_response_value_cvxpy(g.P[0] @ mu, mu, 0.1) - 0.5,
                                                           abs=1e-6)


def test_reg_expl_kernel_is_nonnegative_and_handles_zero_mass():
    P = random_game(4, num_contexts=2, seed=0).P
    logmu = _xp.log(np.array([[0.5, 0.5, 0.0, 0.0], [0.25] * 4]))
    logp = _xp.log(np.array([[0.7, 0.3, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]))
    val = metrics.reg_expl_logp(P, logp, logmu, 0.3)
    assert val.shape == (2,) and np.all(val > 0) and np.all(np.isfinite(val))
    # value: DG_tau(pi)/2 = max_pi' [P(pi' > pi) - tau KL(pi'||mu)] + tau KL(pi||mu) - 1/2, the max over supp(mu)
    for c in range(2):
        mu, pi = np.exp(logmu[c]), np.exp(logp[c])
        w = P[c] @ pi
        closed = best_response_value_closed(w, mu, 0.3) + 0.3 * kl_np(pi, mu) - 0.5
        assert val[c] == pytest.approx(closed, rel=1e-12)
        assert val[c] == pytest.approx(best_response_value_cvxpy(w, mu, 0.3) + 0.3 * kl_np(pi, mu) - 0.5, abs=1e-6)
    bad = _xp.log(np.array([[0.5, 0.3, 0.2, 0.0]]))  # mass where mu = 0
    assert metrics.reg_expl_logp(P[:1], bad, logmu[:1], 0.3)[0] == np.inf


@pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
def test_regularized_duality_gap_of_a_profile_matches_cvxpy(rng, tau):
    """DG_tau(p1, p2) = max_pi J_tau(pi, p2) - min_pi J_tau(p1, pi) (SPEC 1(c)), each extremum solved by cvxpy."""
    mu = rng.dirichlet(np.ones(5))
    g = random_game(5, seed=9, ref=mu)
    p1, p2 = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    P = g.P[0]
    # max_pi J_tau(pi, p2) = BRV(P p2) + tau KL(p2||mu);  min_pi J_tau(p1, pi) = -BRV(-P^T p1) - tau KL(p1||mu)
    hi = best_response_value_cvxpy(P @ p2, mu, tau) + tau * kl_np(p2, mu)
    lo = -best_response_value_cvxpy(-P.T @ p1, mu, tau) - tau * kl_np(p1, mu)
    got = duality_gap(g, p1, p2, tau=tau)
    assert got == pytest.approx(hi - lo, abs=1e-6)
    closed = (best_response_value_closed(P @ p2, mu, tau) + best_response_value_closed(-P.T @ p1, mu, tau)
              + tau * kl_np(p1, mu) + tau * kl_np(p2, mu))
    assert got == pytest.approx(closed, rel=1e-12)
    # an unregularised gap of the same profile, as a linear program
    x = cp.Variable(5, nonneg=True)
    best = cp.Problem(cp.Maximize(x @ (P @ p2)), [cp.sum(x) == 1])
    best.solve(solver=cp.CLARABEL)
    worst = cp.Problem(cp.Minimize(x @ (P.T @ p1)), [cp.sum(x) == 1])
    worst.solve(solver=cp.CLARABEL)
    assert duality_gap(g, p1, p2) == pytest.approx(best.value - worst.value, abs=1e-7)


def test_kl_divergence_values():
    g = rock_paper_scissors()
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert kl_divergence(g, p, q) == pytest.approx(np.log(2))
    assert kl_divergence(g, q, p) == np.inf
    assert kl_divergence(g, p, p) == 0.0


def test_win_rate_values():
    g = rock_paper_scissors()
    assert win_rate(g, [0, 1, 0], [1, 0, 0]) == 1.0  # paper beats rock
    assert win_rate(g, [1, 0, 0], [0, 1, 0]) == 0.0
    assert win_rate(g, [0.5, 0.5, 0], [0.5, 0.5, 0]) == pytest.approx(0.5)


def test_batched_shapes_and_per_context_agreement(rng):
    g = random_game(5, num_contexts=3, seed=7, ref="random")
    pi = rng.dirichlet(np.ones(5), size=3)
    for fn in (
        lambda gg, p: exploitability(gg, p),
        lambda gg, p: exploitability(gg, p, tau=0.3),
        lambda gg, p: duality_gap(gg, p, tau=0.3),
        lambda gg, p: kl_divergence(gg, p, gg.ref),
        lambda gg, p: win_rate(gg, p, gg.ref),
    ):
        out = fn(g, pi)
        assert isinstance(out, np.ndarray) and out.shape == (3,)
        for c in range(3):
            single = PreferenceGame(g.P[c], ref=g.ref[c])
            assert fn(single, pi[c]) == pytest.approx(out[c], abs=1e-14)


def test_single_context_returns_float():
    assert isinstance(exploitability(rock_paper_scissors(), [0.2, 0.3, 0.5]), float)


def test_numpy_and_torch_agree(rng):
    g = random_game(6, num_contexts=2, seed=8, ref="random")
    gt = g.to("torch")
    pi = rng.dirichlet(np.ones(6), size=2)
    opp = rng.dirichlet(np.ones(6), size=2)
    pit, oppt = torch.as_tensor(pi), torch.as_tensor(opp)
    pairs = [
        (exploitability(g, pi), exploitability(gt, pit)),
        (exploitability(g, pi, tau=0.1), exploitability(gt, pit, tau=0.1)),
        (duality_gap(g, pi, opp), duality_gap(gt, pit, oppt)),
        (duality_gap(g, pi, opp, tau=0.1), duality_gap(gt, pit, oppt, tau=0.1)),
        (kl_divergence(g, pi, opp), kl_divergence(gt, pit, oppt)),
        (win_rate(g, pi, opp), win_rate(gt, pit, oppt)),
    ]
    for a, b in pairs:
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "policy, match",
    [
        ([0.5, 0.5], r"policy has shape \(2,\)"),
        ([0.25, 0.25, 0.25, 0.25], r"policy has shape \(4,\)"),
        ([1.2, -0.2, 0.0], "negative entries"),
        ([0.5, 0.2, 0.2], "must sum to 1"),
        ([0.5, np.nan, 0.5], "non-finite"),
    ],
)
def test_bad_policies_raise(policy, match):
    g = rock_paper_scissors()
    with pytest.raises(ValueError, match=match):
        exploitability(g, policy)
    with pytest.raises(ValueError, match=match):
        duality_gap(g, policy)


def test_bad_opponent_and_tau_raise():
    g = rock_paper_scissors()
    with pytest.raises(ValueError, match="opponent must sum to 1"):
        duality_gap(g, [1 / 3] * 3, [0.5, 0.2, 0.2])
    with pytest.raises(ValueError, match="tau must be finite and >= 0"):
        exploitability(g, [1 / 3] * 3, tau=-1.0)
    with pytest.raises(TypeError, match="tau must be a real number"):
        exploitability(g, [1 / 3] * 3, tau="0.1")
    with pytest.raises(ValueError, match=r"policy has shape \(2, 3\)"):
        exploitability(g, np.full((2, 3), 1 / 3))  # one context, two rows
