"""Malformed input to the tabular API raises ValueError/TypeError (OracleError for oracle answers) naming the
argument and the fix (issue 12, "Tabular API"); tolerances follow the dtype the input was given in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nashalign as na
from nashalign import games
from nashalign._validation import tol_for_dtype
from nashalign.oracles import MatrixOracle, OracleError, check_oracle


# ----------------------------------------------------------------------------- dtype-following tolerances
def test_one_tolerance_rule_for_numpy_and_torch():
    for np_dt, t_dt in ((np.float64, torch.float64), (np.float32, torch.float32), (np.float16, torch.float16)):
        assert tol_for_dtype(np_dt) == tol_for_dtype(t_dt) == max(1e-9, 100 * float(np.finfo(np_dt).eps))
    assert tol_for_dtype(np.int64) == 1e-9


@pytest.mark.parametrize("n", [3, 5, 6, 7, 10, 37])
@pytest.mark.parametrize("backend,dtype", [("torch", torch.float32), ("numpy", np.float32)])
def test_float32_runs_with_default_target(n, backend, dtype):
    """The default target='auto' checked a float32 reference at float64 tolerance (issue 12)."""
    game = games.rock_paper_scissors() if n == 3 else games.cyclic(n)
    res = na.solve(game, "egpo", eta=0.5, tau=0.1, steps=10, backend=backend, dtype=dtype)
    assert res.status == "ok"
    assert np.all(res.history["kl_target_last"] >= 0)  # a KL never reads below zero from float32 rounding
    rng = np.random.default_rng(n)
    ref = rng.dirichlet(np.ones(n))
    res = na.solve(game.with_ref(ref), "omd", eta=0.5, tau=0.1, steps=200, backend=backend, dtype=dtype)
    assert res.history.last("kl_target_last") < 1e-5 and np.all(res.history["kl_target_last"] >= 0)


def test_float32_numpy_P_is_accepted_like_a_float32_tensor():
    P64 = games.random_game(6, seed=0).P[0]
    P32 = P64.astype(np.float32)
    g_np, g_t = na.PreferenceGame(P32), na.PreferenceGame(torch.from_numpy(P32))
    np.testing.assert_allclose(g_np.win_rates(np.ones(6) / 6), g_t.win_rates(torch.ones(6) / 6).numpy(), atol=1e-6)
    bad = P32.copy()
    bad[0, 1] += 1e-3  # an error 80x the float32 tolerance: rejected by both
    for P in (bad, torch.from_numpy(bad)):
        with pytest.raises(ValueError, match=r"P \+ P\^T must equal 1"):
            na.PreferenceGame(P)
    with pytest.raises(ValueError, match=r"P \+ P\^T must equal 1 \(tolerance 1e-09\)"):
        na.PreferenceGame(P64 + np.triu(np.full((6, 6), 1e-7), 1))  # float64 keeps its tight tolerance


def test_float32_reference_policy_is_accepted():
    ref = (np.ones(7) / 7).astype(np.float32)  # sums to 1 - 6e-8 in float32
    g = games.cyclic(7).with_ref(ref)
    assert abs(float(g.ref.sum()) - 1) < 1e-6
    with pytest.raises(ValueError, match="ref must sum to 1"):
        games.cyclic(7).with_ref((ref * 1.001).astype(np.float32))


# ----------------------------------------------------------------------------- games
def test_game_rejects_zero_contexts_complex_and_strings():
    with pytest.raises(ValueError, match="zero contexts"):
        na.PreferenceGame(np.zeros((0, 3, 3)))
    with pytest.raises(TypeError, match="P must be real"):
        na.PreferenceGame(np.full((2, 2), 0.5 + 0j))
    with pytest.raises(TypeError, match="P must be real"):
        na.PreferenceGame(torch.full((2, 2), 0.5 + 0j))
    with pytest.raises(TypeError, match="P must be a numeric array"):
        na.PreferenceGame([["a", "b"], ["c", "d"]])
    with pytest.raises(TypeError, match="P must be a numeric array"):
        na.PreferenceGame([[0.5, 0.5], [0.5]])  # ragged


def test_matrix_oracle_names_the_game_argument():
    with pytest.raises(TypeError, match="MatrixOracle: game must be a PreferenceGame"):
        MatrixOracle("rps")
    with pytest.raises(TypeError, match="game"):
        MatrixOracle([["x", "y"], ["z", "w"]])


def test_game_to_names_bad_device_and_dtype():
    g = games.rock_paper_scissors()
    with pytest.raises(ValueError, match="device must be a torch device"):
        g.to("torch", device="nonsense")
    with pytest.raises(TypeError, match="dtype must be a numpy floating dtype"):
        g.to("numpy", dtype=torch.float32)


# ----------------------------------------------------------------------------- solve arguments
@pytest.mark.parametrize("steps,exc", [(2.5, ValueError), (None, TypeError), (math.nan, ValueError),
                                       ("ten", TypeError), (-1, ValueError), (True, TypeError)])
def test_steps_must_be_a_whole_number(steps, exc):
    with pytest.raises(exc, match="steps"):
        na.solve(games.rock_paper_scissors(), "mwu", eta=0.1, steps=steps)


def test_integral_float_steps_run_that_many_steps():
    assert na.solve(games.rock_paper_scissors(), "mwu", eta=0.1, steps=3.0).history.last("step") == 3


def test_schedules_obey_the_rules_of_a_constant_eta():
    g = games.rock_paper_scissors()
    with pytest.raises(ValueError, match="eta"):
        na.solve(g, "mwu", eta=lambda t: -0.1, steps=3)
    with pytest.raises(TypeError, match="schedule eta returned 'x'"):
        na.solve(g, "mwu", eta=lambda t: "x", steps=3)
    with pytest.raises(ValueError, match=r"eta_2 = nan"):  # a schedule that turns bad later is caught at that step
        na.solve(g, "mwu", eta=lambda t: 0.1 if t < 2 else math.nan, steps=5)


@pytest.mark.parametrize("kw,exc,match", [
    ({"record_every": 0}, ValueError, "record_every"),
    ({"record_every": 1.5}, ValueError, "record_every"),
    ({"seed": "a"}, TypeError, "seed"),
    ({"mode": ["exact"]}, ValueError, "mode"),
    ({"backend": None}, ValueError, "backend"),
    ({"state": "abc"}, TypeError, "state"),
])
def test_solve_names_malformed_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        na.solve(games.rock_paper_scissors(), "mwu", eta=0.1, steps=2, **kw)


# ----------------------------------------------------------------------------- metrics
def test_metrics_accept_a_matrix_like_solve_nash():
    g = games.rock_paper_scissors()
    pi = [0.6, 0.3, 0.1]
    assert na.exploitability(g.P[0], pi) == pytest.approx(na.exploitability(g, pi), abs=0)
    assert na.duality_gap(g.P[0].tolist(), pi) == pytest.approx(na.duality_gap(g, pi), abs=0)
    assert na.kl_divergence(g.P[0], pi, [1 / 3] * 3) == pytest.approx(na.kl_divergence(g, pi, [1 / 3] * 3), abs=0)
    assert na.win_rate(torch.as_tensor(g.P[0]), pi, pi) == pytest.approx(0.5)
    with pytest.raises(TypeError, match="game must be a PreferenceGame"):
        na.exploitability("rps", pi)


# ----------------------------------------------------------------------------- oracles and the sampled mode
def _sampled(oracle, **kw):
    return na.solve(games.rock_paper_scissors(), "egpo", eta=0.5, tau=0.1, steps=2, mode="sampled", batch=8,
                    inner_steps=1, oracle=oracle, **kw)


def test_sampled_mode_validates_oracle_answers_at_the_boundary():
    def nan_oracle(prompts, first, second):
        return torch.full((len(first),), float("nan"))

    def short_oracle(prompts, first, second):
        return torch.full((len(first) - 1,), 0.5)

    def wide_oracle(prompts, first, second):
        return torch.full((len(first),), 1.5)

    with pytest.raises(OracleError, match=r"Oracle 'test_sampled_mode.*nan_oracle' returned \d+ invalid .*prompt="):
        _sampled(nan_oracle)
    with pytest.raises(OracleError, match=r"short_oracle' returned shape \(\d+,\) for \d+ pairs"):
        _sampled(short_oracle)
    with pytest.raises(OracleError, match=r"outside \[0, 1\]"):
        _sampled(wide_oracle)
    with pytest.raises(OracleError, match="not a tensor of probabilities"):
        _sampled(lambda p, a, b: ["yes"] * len(a))


def test_a_non_callable_oracle_fails_when_solve_is_called():
    with pytest.raises(TypeError, match="oracle must be callable"):
        _sampled(42)


def test_check_oracle_needs_at_least_one_pair():
    oracle = MatrixOracle(games.rock_paper_scissors())
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_pairs must be >= 1"):
            check_oracle(oracle, [0], [0, 1, 2], num_pairs=bad)
    with pytest.raises(TypeError, match="num_pairs"):
        check_oracle(oracle, [0], [0, 1, 2], num_pairs="many")

    def always_09(prompts, first, second):
        return torch.full((len(first),), 0.9)

    rep = check_oracle(always_09, [0], [0, 1, 2], num_pairs=4)
    assert rep.num_pairs == 4 and not rep.consistent()


def test_sampled_settings_are_checked_when_solve_is_called():
    with pytest.raises(ValueError, match="batch must be >= 1"):
        na.solve(games.rock_paper_scissors(), "egpo", eta=0.5, tau=0.1, steps=1, mode="sampled", batch=0)
    with pytest.raises(ValueError, match="inner_steps must be a whole number"):
        na.solve(games.rock_paper_scissors(), "egpo", eta=0.5, tau=0.1, steps=1, mode="sampled", inner_steps=2.5)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        na.solve(games.rock_paper_scissors(), "egpo", eta=0.5, tau=0.1, steps=1, mode="sampled", lr=-1.0)


# ----------------------------------------------------------------------------- what the fuzz suite found
def test_fuzz_findings_stay_fixed():
    g = games.rock_paper_scissors(ref=[0.6, 0.3, 0.1])
    with pytest.raises(ValueError, match="tau=1e-300 is below 1e-150"):
        na.solve(g, "egpo", eta=0.3, tau=1e-300, steps=2)
    with pytest.raises(ValueError, match="tau=1e-300 is below"):
        na.exploitability(g, [0.5, 0.3, 0.2], tau=1e-300)
    P = games.bradley_terry([1.0, 0.0, -1.0], beta=1e-310).P  # a tiny temperature: exactly 0/1, no overflow warning
    assert set(np.unique(P).tolist()) == {0.0, 0.5, 1.0}
    with pytest.raises(ValueError, match="rewards is empty"):
        games.bradley_terry(np.zeros((0, 1)))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        games.random_game(3, seed=-1)
    with pytest.raises(TypeError, match="oracle is the class MatrixOracle"):
        na.oracles.counted(MatrixOracle)
    with pytest.raises(ValueError, match="the oracle '0.'"):
        na.oracles.counted("0.")
    with pytest.raises(ValueError, match="estimator must be one of"):
        na.solve(g, "egpo", eta=0.3, tau=0.1, steps=1, mode="sampled", estimator=np.array([]))
    with pytest.raises(TypeError, match="dtype must be a numpy floating dtype"):
        na.solve(g, "egpo", eta=0.3, tau=0.1, steps=1, dtype=",")
    with pytest.raises(TypeError, match="nash_md: mixture must be a real number"):
        na.solve(g, "nash_md", eta=0.3, tau=0.1, steps=1, mixture=0j)
    with pytest.raises(OracleError, match=r"first \(response ids\) must be integer ids"):
        MatrixOracle(g)([0], [1.5], [0])  # 1.5 was truncated to 1
    with pytest.raises(ValueError, match="responses holds 1 entries for 2 prompts"):
        check_oracle(MatrixOracle(games.random_game(3, num_contexts=2, seed=0)), [0, 1], [[0, 1, 2]])
    with pytest.raises(ValueError, match="steps must be a whole number"):
        na.solve(g, "mwu", eta=0.1, steps=1e300)
