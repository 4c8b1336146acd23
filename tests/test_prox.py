"""solve_minimax: the proximal point method reaches the minimax winner that the LP gives."""

from __future__ import annotations

import numpy as np
import pytest

from nashalign import exploitability, games, solve_minimax, solve_nash


def test_rps_from_skewed_reference_reaches_uniform() -> None:
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    r = solve_minimax(g, tau=0.1, eta=2.0, tol=1e-8)
    assert r.converged
    np.testing.assert_allclose(r.policy, np.full(3, 1 / 3), atol=1e-7)
    assert float(r.exploitability) < 1e-8
    assert float(exploitability(g, r.policy)) == pytest.approx(float(r.exploitability), abs=1e-15)


def test_batched_random_game_matches_lp() -> None:
    g = games.random_game(6, num_contexts=5, seed=3)
    r = solve_minimax(g, tau=0.05, eta=4.0, tol=1e-11, max_outer=20_000)
    assert r.converged and r.policy.shape == (5, 6)
    assert np.max(r.exploitability) < 1e-11
    # a generic random game has a unique NE: the iterate is the LP's answer, up to distance ~ expl / gap
    # (context 1 has a response that loses by only 4.9e-4, so 1e-11 exploitability leaves ~7e-9)
    np.testing.assert_allclose(r.policy, solve_nash(g), atol=1e-7)
    np.testing.assert_allclose(exploitability(g, r.policy), r.exploitability, atol=1e-15)


def test_polish_finishes_small_games_to_machine_precision() -> None:
    g = games.random_game(10, num_contexts=4, seed=0)
    plain = solve_minimax(g, tol=1e-14, max_outer=300, check_every=10)
    pol = solve_minimax(g, tol=1e-14, max_outer=300, check_every=10, polish=True)
    assert not plain.converged and plain.polished == 0  # 300 outer steps are not enough without it
    assert pol.converged and pol.polished == 4
    assert pol.outer_steps < plain.outer_steps
    assert np.max(pol.exploitability) < 1e-14
    np.testing.assert_allclose(pol.policy, solve_nash(g), atol=1e-9)
    np.testing.assert_allclose(pol.policy.sum(-1), 1.0, atol=1e-14)


def test_torch_backend_agrees_with_numpy() -> None:
    torch = pytest.importorskip("torch")
    g = games.random_game(5, num_contexts=3, seed=1)
    a = solve_minimax(g, tol=1e-9, max_outer=20_000)
    b = solve_minimax(g, tol=1e-9, max_outer=20_000, backend="torch", dtype=torch.float64)
    assert isinstance(b.policy, torch.Tensor)
    np.testing.assert_allclose(b.policy.numpy(), a.policy, atol=1e-12)
    assert a.outer_steps == b.outer_steps


@pytest.mark.parametrize("kw", [{"tau": 0.0}, {"tau": -1.0}, {"tol": 0.0}, {"polish_below": -1.0}])
def test_bad_settings_raise(kw: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        solve_minimax(games.rock_paper_scissors(), **kw)


def test_reports_not_converged_when_budget_runs_out() -> None:
    g = games.random_game(30, seed=2)
    r = solve_minimax(g, tol=1e-12, max_outer=3, check_every=1)
    assert not r.converged and r.outer_steps == 3
    assert float(r.exploitability) > 1e-12
    assert float(exploitability(g, r.policy)) == pytest.approx(float(r.exploitability), rel=1e-9)
