"""Exact equilibria: analytic cases, SPEC identities, hypothesis properties, failure modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nashalign import games
from nashalign.equilibrium import EquilibriumError, EquilibriumInfo, solve_nash, solve_regularized_nash
from nashalign.game import PreferenceGame
from nashalign.metrics import duality_gap, exploitability, kl_divergence

PROPS = settings(max_examples=25, deadline=None)


def fixed_point_residual(g: PreferenceGame, pi: np.ndarray, tau: float) -> float:
    """max_y |log pi(y) - log BR_tau(pi)(y)| with BR_tau(pi) ∝ mu exp(P pi / tau) (SPEC 1(d))."""
    mu = g.ref[0]
    logbr = np.log(mu) + g.P[0] @ pi / tau
    logbr -= np.logaddexp.reduce(logbr)
    return float(np.max(np.abs(np.log(pi) - logbr)))


# ----------------------------------------------------------------------------- analytic: unregularised
@pytest.mark.parametrize("eps", [1.0, 0.5, 0.01])
def test_rps_has_uniform_equilibrium(eps):
    pi, info = solve_nash(games.rock_paper_scissors(eps=eps), return_info=True)
    assert pi.shape == (3,) and pi.dtype == np.float64
    np.testing.assert_allclose(pi, np.full(3, 1 / 3), atol=1e-12)
    assert isinstance(info, EquilibriumInfo)
    assert info.value[0] == pytest.approx(0.5, abs=1e-9)  # LP value v* = 1/2
    assert info.exploitability[0] < 1e-12


@pytest.mark.parametrize("n", [5, 7, 9, 15])
def test_odd_cyclic_games_have_uniform_equilibrium(n):
    np.testing.assert_allclose(solve_nash(games.cyclic(n, eps=0.6)), np.full(n, 1 / n), atol=1e-10)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_even_cyclic_games_return_an_equilibrium(n):
    pi = solve_nash(games.cyclic(n))
    assert exploitability(games.cyclic(n), pi) < 1e-10  # not unique: any equilibrium will do


def test_bradley_terry_equilibrium_is_the_best_response():
    rewards = np.array([[0.3, -1.0, 2.5, 2.4, 0.0], [5.0, 0.0, 1.0, 4.9, -3.0]])
    pi = solve_nash(games.bradley_terry(rewards))
    np.testing.assert_allclose(pi, np.eye(5)[rewards.argmax(-1)], atol=1e-10)


def test_torch_game_gives_the_same_numpy_answer():
    g = games.random_game(9, num_contexts=2, seed=11, ref="random")
    a = solve_nash(g.to("torch"))
    assert isinstance(a, np.ndarray) and a.dtype == np.float64
    np.testing.assert_allclose(a, solve_nash(g), atol=1e-12)
    np.testing.assert_allclose(solve_regularized_nash(g.to("torch"), 0.2), solve_regularized_nash(g, 0.2), atol=1e-13)


def test_raw_matrix_is_accepted():
    np.testing.assert_allclose(solve_nash(games.rock_paper_scissors().P[0]), np.full(3, 1 / 3), atol=1e-12)


def test_highs_gives_the_same_unique_equilibrium():
    g = games.random_game(12, num_contexts=2, seed=5)
    np.testing.assert_allclose(solve_nash(g, solver="HIGHS"), solve_nash(g), atol=1e-10)


def test_single_response_is_trivial():
    assert solve_nash(np.array([[0.5]])).tolist() == [1.0]
    assert solve_regularized_nash(np.array([[0.5]]), 0.1).tolist() == [1.0]


# ----------------------------------------------------------------------------- analytic: regularised
def test_regularized_fixed_point_holds():
    """pi*(y) ∝ mu(y) exp(P(y > pi*)/tau) (SPEC 1(d)) to 1e-9, on random games and several tau."""
    for tau in (0.003, 0.05, 0.5, 5.0):
        g = games.random_game(10, seed=int(tau * 1000), ref="random")
        pi = solve_regularized_nash(g, tau)
        br = g.ref[0] * np.exp(g.P[0] @ pi / tau)
        np.testing.assert_allclose(pi, br / br.sum(), rtol=1e-9, atol=0)
        assert fixed_point_residual(g, pi, tau) < 1e-11


def test_large_tau_returns_the_reference():
    mu = np.array([0.5, 0.3, 0.15, 0.05])
    g = games.random_game(4, seed=3, ref=mu)
    np.testing.assert_allclose(solve_regularized_nash(g, 1e6), mu, rtol=1e-6)
    # and the O(1/tau) correction has the right first-order form: log(pi/mu) ~ (P mu - mean)/tau
    pi = solve_regularized_nash(g, 1e3)
    w = g.P[0] @ mu
    np.testing.assert_allclose(np.log(pi / mu), (w - mu @ w) / 1e3, atol=1e-6)


def test_small_tau_approaches_the_nash_equilibrium():
    g = games.random_game(8, seed=21)
    ne = solve_nash(g)
    pi = solve_regularized_nash(g, 1e-4)
    assert exploitability(g, pi) < 1e-4 * np.log(8) + 1e-12  # expl(pi*_tau) <= tau log(1/min mu)
    assert np.abs(pi - ne).max() < 1e-2


def test_rps_regularized_against_spec_identities():
    """RPS, mu = (0.7, 0.2, 0.1), tau = 0.1 (SPEC 1(b), 1(c), 1(d), 12(e))."""
    tau = 0.1
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    mu = g.ref[0]
    pi, info = solve_regularized_nash(g, tau, return_info=True)
    # value 1/2, a fixed point, zero regularised gap
    assert info.value[0] == pytest.approx(0.5, abs=1e-7)
    assert info.reg_exploitability[0] < 1e-14 and info.residual[0] < 1e-13
    assert duality_gap(g, pi, tau=tau) == pytest.approx(0.0, abs=1e-13)
    # expl(pi*_tau) = tau [max_y log(pi*/mu) - KL(pi*||mu)] <= tau log(1/min mu)
    kl = float(np.sum(pi * np.log(pi / mu)))
    expect = tau * (np.max(np.log(pi / mu)) - kl)
    assert exploitability(g, pi) == pytest.approx(expect, rel=1e-10, abs=1e-15)
    assert exploitability(g, pi) <= tau * np.log(1 / mu.min())
    # for any other pi: DG_tau(pi) = 2 tau KL(pi || BR_tau(pi)), f(pi) = 1/2 - DG_tau(pi)/2
    A = g.P[0] - 0.5
    for other in ([0.6, 0.3, 0.1], [1 / 3] * 3, [0.2, 0.2, 0.6]):
        other = np.array(other)
        br = mu * np.exp(g.P[0] @ other / tau)
        br /= br.sum()
        dg = duality_gap(g, other, tau=tau)
        assert dg == pytest.approx(2 * tau * np.sum(other * np.log(other / br)), rel=1e-10)
        f = 0.5 - tau * np.sum(other * np.log(other / mu)) - tau * np.log(np.sum(mu * np.exp(A @ other / tau)))
        assert f == pytest.approx(0.5 - dg / 2, abs=1e-14)
        assert f < 0.5  # pi*_tau is the unique maximiser
    # the answer is the argmax of f: compare with a long EGPO run (SPEC 13) from mu
    lp, lmu = np.log(mu), np.log(mu)
    eta = 0.5
    for _ in range(3000):
        base = (1 - eta * tau) * lp + eta * tau * lmu
        half = base + eta * g.P[0] @ np.exp(lp)
        half -= np.logaddexp.reduce(half)
        lp = base + eta * g.P[0] @ np.exp(half)
        lp -= np.logaddexp.reduce(lp)
    assert kl_divergence(g, np.exp(lp), pi) < 1e-14


def test_zero_reference_mass_gets_zero_probability():
    mu = np.array([[0.5, 0.0, 0.5, 0.0, 0.0], [0.2] * 5, [0.0, 0.0, 1.0, 0.0, 0.0]])
    g = games.random_game(5, num_contexts=3, seed=2)
    pi, info = solve_regularized_nash(g, 0.05, ref=mu, return_info=True)
    assert pi.shape == (3, 5)
    np.testing.assert_array_equal(pi[mu == 0], 0.0)
    assert (pi[mu > 0] > 0).all()
    np.testing.assert_array_equal(pi[2], [0, 0, 1, 0, 0])
    assert info.status[2] == "trivial"
    assert np.all(info.reg_exploitability < 1e-14)
    # the restricted game on supp(mu) gives the same answer
    sub = PreferenceGame(g.P[0][np.ix_([0, 2], [0, 2])], ref=[0.5, 0.5])
    np.testing.assert_allclose(pi[0, [0, 2]], solve_regularized_nash(sub, 0.05), atol=1e-14)


def test_polish_improves_on_the_interior_point_answer():
    g = games.random_game(15, seed=9, ref="random")
    raw, info_raw = solve_regularized_nash(g, 0.02, polish=False, return_info=True)
    pol, info = solve_regularized_nash(g, 0.02, return_info=True)
    assert info.reg_exploitability[0] < 1e-14
    assert info.reg_exploitability[0] < 1e-6 * info_raw.reg_exploitability[0]
    assert kl_divergence(g, pol, raw) < 1e-6  # the polish only refines


# ----------------------------------------------------------------------------- hypothesis properties
@st.composite
def random_games(draw):
    n = draw(st.integers(2, 12))
    C = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    return games.random_game(n, num_contexts=C, seed=seed, ref="random"), seed


@PROPS
@given(random_games())
def test_property_nash_is_an_accurate_distribution(gs):
    g, _ = gs
    pi = solve_nash(g)
    C, n = g.num_contexts, g.num_responses
    assert pi.shape == (C, n) and pi.dtype == np.float64
    assert (pi >= 0).all()
    np.testing.assert_allclose(pi.sum(-1), 1.0, atol=1e-14)
    assert np.all(exploitability(g, pi) < 1e-7)
    assert np.all(exploitability(g, pi) < 1e-12)  # what the polish actually reaches


@PROPS
@given(random_games())
def test_property_batched_equals_per_context(gs):
    g, _ = gs
    batch = solve_nash(g)
    rbatch = solve_regularized_nash(g, 0.1)
    for c in range(g.num_contexts):
        single = PreferenceGame(g.P[c], ref=g.ref[c])
        np.testing.assert_allclose(solve_nash(single), batch[c], atol=1e-12)
        np.testing.assert_allclose(solve_regularized_nash(single, 0.1), rbatch[c], rtol=1e-12, atol=1e-300)


@PROPS
@given(random_games(), st.randoms(use_true_random=False))
def test_property_permuting_responses_permutes_equilibria(gs, rnd):
    g, _ = gs
    n = g.num_responses
    perm = np.array(rnd.sample(range(n), n))
    gp = PreferenceGame(g.P[:, perm][:, :, perm], ref=g.ref[:, perm])
    np.testing.assert_allclose(solve_nash(gp), solve_nash(g)[:, perm], atol=1e-10)  # generic: unique NE
    np.testing.assert_allclose(
        solve_regularized_nash(gp, 0.05), solve_regularized_nash(g, 0.05)[:, perm], rtol=1e-11, atol=1e-300
    )


@PROPS
@given(random_games(), st.sampled_from([1e-3, 0.01, 0.1, 1.0, 10.0]))
def test_property_regularized_is_an_accurate_fixed_point(gs, tau):
    g, _ = gs
    pi, info = solve_regularized_nash(g, tau, return_info=True)
    assert (pi > 0).all()
    np.testing.assert_allclose(pi.sum(-1), 1.0, atol=1e-14)
    reg = exploitability(g, pi, tau=tau)
    reg = np.atleast_1d(reg)
    assert np.all(reg < 1e-12)
    np.testing.assert_allclose(info.reg_exploitability, reg, atol=1e-15)
    assert np.all(info.residual < 1e-10)
    assert np.all(np.abs(info.value - 0.5) < 1e-6)


# ----------------------------------------------------------------------------- failure modes and errors
@pytest.mark.parametrize("tau", [0, 0.0, -0.1, float("inf"), float("nan")])
def test_tau_must_be_positive(tau):
    with pytest.raises(ValueError, match=r"tau must be finite and > 0.*use solve_nash"):
        solve_regularized_nash(games.rock_paper_scissors(), tau)


def test_tau_must_be_a_number():
    with pytest.raises(TypeError, match="tau must be a real number"):
        solve_regularized_nash(games.rock_paper_scissors(), "0.1")
    with pytest.raises(TypeError, match="tau must be a real number"):
        solve_regularized_nash(games.rock_paper_scissors(), True)


def test_bad_arguments_raise():
    g = games.rock_paper_scissors()
    with pytest.raises(TypeError, match="game must be a PreferenceGame"):
        solve_nash("rps")
    with pytest.raises(ValueError, match="solver 'NOPE' is not installed"):
        solve_nash(g, solver="NOPE")
    with pytest.raises(TypeError, match="solver must be a cvxpy solver name"):
        solve_nash(g, solver=3)
    with pytest.raises(TypeError, match="check must be True or False"):
        solve_nash(g, check="warn")
    with pytest.raises(ValueError, match="tol must be finite and > 0"):
        solve_nash(g, tol=0.0)
    with pytest.raises(ValueError, match="ref must sum to 1"):
        solve_regularized_nash(g, 0.1, ref=[0.5, 0.2, 0.2])
    with pytest.raises(ValueError, match=r"ref has shape \(2,\)"):
        solve_regularized_nash(g, 0.1, ref=[0.5, 0.5])


def test_inaccurate_answer_raises_or_warns_with_numbers():
    g = games.random_game(30, seed=1, ref="random")
    opts = {"max_iter": 2}  # cripple the interior-point solver
    with pytest.raises(EquilibriumError, match=r"exploitability < 1e-07: contexts \[0\] have exploitability"):
        solve_nash(g, polish=False, solver_options=opts)
    with pytest.warns(RuntimeWarning, match="solve_nash did not reach"):
        pi = solve_nash(g, polish=False, solver_options=opts, throw=False)
    assert exploitability(g, pi) > 1e-7
    with pytest.raises(EquilibriumError, match=r"tau\*KL\(pi\|\|BR_tau\(pi\)\) = \["):
        solve_regularized_nash(g, 0.01, polish=False, tol=1e-12, solver_options=opts)
    pi_unchecked = solve_nash(g, polish=False, solver_options=opts, check=False)
    np.testing.assert_allclose(pi_unchecked, pi)


def test_polish_rescues_a_crippled_regularized_solve():
    g = games.random_game(12, seed=4, ref="random")
    pi, info = solve_regularized_nash(g, 0.1, solver_options={"max_iter": 3}, return_info=True)
    assert info.reg_exploitability[0] < 1e-14


def test_info_fields():
    g = games.random_game(6, num_contexts=2, seed=0, ref="random")
    _, info = solve_nash(g, return_info=True)
    assert info.solver == "CLARABEL" and len(info.status) == 2
    assert info.exploitability.shape == (2,) and info.reg_exploitability is None
    _, rinfo = solve_regularized_nash(g, 0.3, return_info=True)
    assert rinfo.residual.shape == (2,) and rinfo.polish_iterations >= 1
    assert rinfo.solve_time >= 0 and rinfo.polish_time >= 0


def test_torch_game_inputs_stay_untouched():
    g = games.random_game(4, seed=0).to("torch")
    P0 = g.P.clone()
    solve_regularized_nash(g, 0.1)
    assert torch.equal(g.P, P0)


def test_support_polish_is_exact_on_the_support():
    g = games.random_game(40, num_contexts=2, seed=13)
    raw = solve_nash(g, polish=False)
    pi, info = solve_nash(g, return_info=True)
    assert np.all(info.exploitability < 1e-14)
    off = pi == 0  # the polish re-solves the equalising system, so off-support mass is exactly 0
    assert 0 < off.sum(-1).min() and off.sum(-1).max() < 40
    assert np.all(raw[off] < 1e-8) and np.any(raw[off] > 0)  # interior point: only approximately 0
    A = g.P - 0.5
    wins = np.einsum("cij,cj->ci", A, pi)
    np.testing.assert_allclose(wins[~off], 0.0, atol=1e-14)  # every support response earns the value
    assert np.all(wins[off] < 0)  # generic: strictly worse off the support
