"""Game constructors: the formulas they promise, their equilibria, their input checks, their doctests."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy.special import expit

import nashalign.equilibrium as equilibrium_module
import nashalign.games as games_module
from nashalign import games
from nashalign.equilibrium import solve_nash
from nashalign.game import PreferenceGame


def assert_valid_game(g: PreferenceGame) -> None:
    P = g.P
    np.testing.assert_array_equal(P + np.swapaxes(P, -1, -2), 1.0)  # exactly complementary
    assert P.min() >= 0 and P.max() <= 1


@pytest.mark.parametrize("module", [games_module, equilibrium_module])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# ----------------------------------------------------------------------------- rock-paper-scissors / cyclic
def test_rps_matches_spec_convention():
    g = games.rock_paper_scissors()
    A = g.P[0] - 0.5
    np.testing.assert_array_equal(A, 0.5 * np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]))
    assert g.P[0, 1, 0] == 1.0  # paper beats rock
    assert g.P[0, 2, 1] == 1.0  # scissors beat paper
    assert g.P[0, 0, 2] == 1.0  # rock beats scissors
    np.testing.assert_allclose(games.rock_paper_scissors(eps=0.2).P[0, 1, 0], 0.6)


def test_rps_ref_is_passed_through():
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    np.testing.assert_allclose(g.ref, [[0.7, 0.2, 0.1]])


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_rps_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match=r"eps must lie in \[0, 1\]"):
        games.rock_paper_scissors(eps=eps)


def test_rps_rejects_non_number_eps():
    with pytest.raises(TypeError, match="eps must be a real number"):
        games.rock_paper_scissors(eps="1")


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 10, 11])
def test_cyclic_structure(n):
    g = games.cyclic(n, eps=0.8)
    assert_valid_game(g)
    A = g.P[0] - 0.5
    np.testing.assert_allclose(A.sum(-1), 0.0, atol=1e-15)  # circulant with zero row sums
    k = (n - 1) // 2
    for d in range(1, k + 1):
        assert A[0, n - d] == pytest.approx(0.4)  # 0 beats the k before it (cyclically)
        assert A[0, d] == pytest.approx(-0.4)  # and loses to the k after it
    if n % 2 == 0:
        assert A[0, n // 2] == 0.0  # ties with its opposite
    assert np.count_nonzero(A[0]) == 2 * k


def test_cyclic_three_is_rps():
    np.testing.assert_array_equal(games.cyclic(3).P, games.rock_paper_scissors().P)


def test_cyclic_even_has_non_uniform_equilibria():
    g = games.cyclic(4)
    other = np.array([0.5, 0.0, 0.5, 0.0])
    assert g.win_rates(other).max() - 0.5 == pytest.approx(0.0, abs=1e-15)  # also an NE


@pytest.mark.parametrize("n, err, match", [(1, ValueError, "n must be >= 2"), (2.5, TypeError, "integer")])
def test_cyclic_rejects_bad_n(n, err, match):
    with pytest.raises(err, match=match):
        games.cyclic(n)


# ----------------------------------------------------------------------------- Bradley-Terry / population
def test_bradley_terry_formula_and_batch():
    r = np.array([[0.0, 1.0, -2.0], [3.0, 0.5, 0.5]])
    g = games.bradley_terry(r, beta=0.5)
    assert g.P.shape == (2, 3, 3)
    assert_valid_game(g)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                assert g.P[c, i, j] == pytest.approx(expit((r[c, i] - r[c, j]) / 0.5), abs=1e-15)


def test_bradley_terry_is_transitive():
    r = np.random.default_rng(0).normal(size=7)
    P = games.bradley_terry(r).P[0]
    order = np.argsort(-r)
    for a, b in zip(order[:-1], order[1:]):
        assert P[a, b] > 0.5


def test_bradley_terry_accepts_torch_rewards():
    g = games.bradley_terry(torch.tensor([0.0, 1.0]))
    assert g.P[0, 1, 0] == pytest.approx(expit(1.0))


@pytest.mark.parametrize(
    "rewards, kwargs, err, match",
    [
        (np.zeros((2, 2, 2)), {}, ValueError, r"shape \(n,\) for one context or \(C, n\)"),
        ([0.0, np.nan], {}, ValueError, "non-finite"),
        ([0.0, 1.0], {"beta": 0.0}, ValueError, "beta must be finite and > 0"),
        ([0.0, 1.0], {"beta": -1.0}, ValueError, "beta must be finite and > 0"),
        ("abc", {}, TypeError, "numeric array"),
    ],
)
def test_bradley_terry_validation(rewards, kwargs, err, match):
    with pytest.raises(err, match=match):
        games.bradley_terry(rewards, **kwargs)


def test_population_is_weighted_average_of_bt():
    r = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]])
    w = np.array([0.25, 0.75])
    g = games.population(r, w, beta=2.0)
    expect = 0.25 * games.bradley_terry(r[0], beta=2.0).P + 0.75 * games.bradley_terry(r[1], beta=2.0).P
    np.testing.assert_allclose(g.P, expect, atol=1e-15)
    assert_valid_game(g)


def test_population_batched_contexts():
    r = np.random.default_rng(1).normal(size=(3, 2, 4))  # K=3 raters, C=2 contexts, n=4
    g = games.population(r)
    assert g.P.shape == (2, 4, 4)
    expect = np.mean([games.bradley_terry(r[k]).P for k in range(3)], axis=0)
    np.testing.assert_allclose(g.P, expect, atol=1e-15)


def test_condorcet_is_cyclic_with_uniform_equilibrium():
    g = games.condorcet(strength=5.0)
    P = g.P[0]
    assert P[0, 1] > 0.5 and P[1, 2] > 0.5 and P[2, 0] > 0.5  # a > b > c > a
    np.testing.assert_allclose(solve_nash(g), np.full(3, 1 / 3), atol=1e-9)
    assert games.condorcet(strength=60.0).P[0, 0, 1] == pytest.approx(2 / 3, abs=1e-12)


@pytest.mark.parametrize(
    "rewards, weights, match",
    [
        (np.zeros(3), None, r"shape \(K, n\)"),
        (np.zeros((2, 3)), [0.5, 0.25, 0.25], r"weights must have shape \(2,\)"),
        (np.zeros((2, 3)), [1.5, -0.5], "non-negative"),
        (np.zeros((2, 3)), [0.5, 0.4], "must sum to 1"),
    ],
)
def test_population_validation(rewards, weights, match):
    with pytest.raises(ValueError, match=match):
        games.population(rewards, weights)


def test_condorcet_rejects_bad_strength():
    with pytest.raises(ValueError, match="strength must be finite and > 0"):
        games.condorcet(strength=0.0)


# ----------------------------------------------------------------------------- GPM
def test_gpm_matches_formula():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(5, 4))
    lam = np.array([0.5, 2.0])
    g = games.gpm(v, eigenvalues=lam, beta=0.3)
    assert_valid_game(g)
    u = v / np.linalg.norm(v, axis=-1, keepdims=True)
    R = np.zeros((4, 4))
    R[0, 1], R[1, 0], R[2, 3], R[3, 2] = -0.5, 0.5, -2.0, 2.0
    score = (u @ R.T) @ u.T  # <R v_y, v_y'>
    np.testing.assert_allclose(g.P[0], expit(score / 0.3), atol=1e-15)


def test_gpm_three_directions_is_cyclic():
    ang = 2 * np.pi * np.arange(3) / 3
    g = games.gpm(np.stack([np.cos(ang), np.sin(ang)], -1), beta=0.1)
    P = g.P[0]
    assert P[0, 1] > 0.5 and P[1, 2] > 0.5 and P[2, 0] > 0.5
    np.testing.assert_allclose(solve_nash(g), np.full(3, 1 / 3), atol=1e-9)


def test_gpm_batched_with_per_context_eigenvalues():
    v = np.random.default_rng(3).normal(size=(2, 4, 2))
    g = games.gpm(v, eigenvalues=[[1.0], [0.0]])
    assert g.P.shape == (2, 4, 4)
    np.testing.assert_array_equal(g.P[1], 0.5)  # lambda = 0: every pair ties


@pytest.mark.parametrize(
    "emb, lam, match",
    [
        (np.ones((3, 3)), None, "even, non-zero last dimension"),
        (np.ones(4), None, "even, non-zero last dimension"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), None, "all-zero row"),
        (np.ones((3, 4)), [1.0], r"eigenvalues must have shape \(2,\)"),
        (np.ones((3, 2)), [-1.0], "eigenvalues must be >= 0"),
        (np.ones((3, 2)), [[1.0], [1.0]], "per-context eigenvalues"),
    ],
)
def test_gpm_validation(emb, lam, match):
    with pytest.raises(ValueError, match=match):
        games.gpm(emb, eigenvalues=lam)


# ----------------------------------------------------------------------------- random games
def test_random_game_convention_and_distribution():
    g = games.random_game(6, seed=0)
    assert g.squeezed and g.P.shape == (1, 6, 6)
    assert_valid_game(g)
    gb = games.random_game(6, num_contexts=1, seed=0)
    assert not gb.squeezed and gb.P.shape == (1, 6, 6)
    np.testing.assert_array_equal(gb.P, g.P)  # same draw, only the output convention differs
    big = games.random_game(200, num_contexts=2, seed=1).P
    low = big[:, np.tril_indices(200, -1)[0], np.tril_indices(200, -1)[1]]
    assert abs(low.mean() - 0.5) < 0.01 and abs(low.var() - 1 / 12) < 0.005  # U(0, 1)


def test_random_game_seeds():
    a = games.random_game(5, seed=7).P
    np.testing.assert_array_equal(a, games.random_game(5, seed=7).P)
    np.testing.assert_array_equal(a, games.random_game(5, seed=np.random.default_rng(7)).P)
    assert not np.array_equal(a, games.random_game(5, seed=8).P)


def test_random_game_random_ref():
    g = games.random_game(5, num_contexts=3, seed=0, ref="random")
    assert g.ref.shape == (3, 5)
    np.testing.assert_allclose(g.ref.sum(-1), 1.0, atol=1e-15)
    assert (g.ref > 0).all() and not np.allclose(g.ref[0], g.ref[1])
    assert games.random_game(5, seed=0, ref="random").ref.shape == (1, 5)


@pytest.mark.parametrize(
    "args, kwargs, err, match",
    [
        ((0,), {}, ValueError, "n must be >= 1"),
        ((3,), {"num_contexts": 0}, ValueError, "num_contexts must be >= 1"),
        ((3,), {"ref": "uniform"}, ValueError, "ref must be None, 'random'"),
        ((3,), {"seed": "x"}, TypeError, "seed must be an int"),
        (("3",), {}, TypeError, "n must be an integer"),
    ],
)
def test_random_game_validation(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        games.random_game(*args, **kwargs)


# ----------------------------------------------------------------------------- counts
def test_from_counts_estimate_and_stderr():
    wins = np.array([[0, 8, 0], [2, 0, 3], [0, 1, 0]], dtype=float)
    g, se = games.from_counts(wins, smoothing=1.0, return_stderr=True)
    P = g.P[0]
    assert_valid_game(g)
    assert P[0, 1] == pytest.approx(9 / 12)
    assert P[1, 2] == pytest.approx(4 / 6)
    assert P[0, 2] == pytest.approx(0.5)  # never compared
    assert se[0, 1] == pytest.approx(np.sqrt(9 * 3 / (12**2 * 13)))
    assert se[0, 2] == pytest.approx(np.sqrt(1 / 12), rel=1e-12)  # Beta(1, 1) = U(0, 1)
    np.testing.assert_array_equal(np.diag(se), 0.0)


def test_from_counts_without_smoothing_and_unseen_pairs():
    g, se = games.from_counts([[0, 3], [1, 0]], smoothing=0.0, return_stderr=True)
    assert g.P[0, 0, 1] == pytest.approx(0.75)
    g2, se2 = games.from_counts([[0, 0], [0, 0]], smoothing=0.0, return_stderr=True)
    np.testing.assert_array_equal(g2.P, 0.5)
    assert se2[0, 1] == pytest.approx(np.sqrt(1 / 12))


def test_from_counts_ignores_diagonal_and_batches():
    w = np.random.default_rng(0).integers(0, 10, size=(2, 4, 4)).astype(float)
    g = games.from_counts(w)
    w0 = w.copy()
    w0[:, np.arange(4), np.arange(4)] = 0
    np.testing.assert_array_equal(g.P, games.from_counts(w0).P)
    assert g.P.shape == (2, 4, 4)


def test_sample_games_matches_beta_posterior():
    wins = np.array([[0, 30, 1], [10, 0, 0], [4, 0, 0]], dtype=float)
    g = games.sample_games(wins, num_samples=4000, seed=0)
    assert g.P.shape == (4000, 3, 3)
    assert_valid_game(g)
    x = g.P[:, 0, 1]
    a, b = 31.0, 11.0
    assert abs(x.mean() - a / (a + b)) < 3e-3
    assert abs(x.std() - np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))) < 3e-3
    mean_game = games.from_counts(wins)
    np.testing.assert_allclose(g.P.mean(0), mean_game.P[0], atol=0.01)


def test_sample_games_batched_order_and_point_masses():
    w = np.zeros((2, 2, 2))
    w[0, 0, 1] = 5  # context 0: one-sided data
    w[1, 1, 0] = 5  # context 1: the other way
    g = games.sample_games(w, num_samples=3, smoothing=0.0, seed=1)
    assert g.P.shape == (6, 2, 2)
    np.testing.assert_array_equal(g.P[0::2, 0, 1], 1.0)  # draw-major: even contexts are context 0
    np.testing.assert_array_equal(g.P[1::2, 0, 1], 0.0)


def test_sample_games_posterior_of_the_equilibrium():
    wins = np.array([[0, 40, 5], [10, 0, 40], [40, 10, 0]], dtype=float)  # noisy RPS-like cycle
    pis = solve_nash(games.sample_games(wins, num_samples=50, seed=3))
    assert pis.shape == (50, 3)
    assert (pis.std(0) > 0).all() and (pis.min(0) > 0).all()  # uncertain, but always fully mixed


@pytest.mark.parametrize(
    "wins, kwargs, err, match",
    [
        (np.ones((2, 3)), {}, ValueError, "square count matrix"),
        (np.ones(3), {}, ValueError, "square count matrix"),
        (-np.ones((2, 2)), {}, ValueError, "non-negative counts"),
        (np.ones((2, 2)), {"smoothing": -1.0}, ValueError, "smoothing must be finite and >= 0"),
        (np.array([[0.0, np.inf], [1.0, 0.0]]), {}, ValueError, "non-finite"),
    ],
)
def test_from_counts_validation(wins, kwargs, err, match):
    with pytest.raises(err, match=match):
        games.from_counts(wins, **kwargs)
    with pytest.raises(err, match=match):
        games.sample_games(wins, num_samples=2, **kwargs)


def test_sample_games_rejects_bad_num_samples():
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        games.sample_games(np.ones((2, 2)), num_samples=0)
