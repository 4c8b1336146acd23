"""The driver :func:`nashalign.solve`: history, averaging, recording, early stop, failures, serialisation."""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np
import pytest

import nashalign as na
from nashalign import SolveResult, games, solve
from nashalign.algorithms import MWU, get_algorithm
from nashalign.result import COLUMNS
from nashalign.solve import exact_signal

PI0 = np.array([0.6, 0.3, 0.1])


def test_history_has_every_column_and_records_every_k_steps():
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    r = solve(g, "egpo", eta=0.5, tau=0.1, steps=95, record_every=10, init=PI0)
    assert set(r.history.as_dict()) == set(COLUMNS)
    assert r.history["step"].tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]  # start, every 10, last
    for col in ("expl_last", "expl_avg", "reg_expl_last", "reg_expl_avg", "kl_target_last", "kl_target_avg"):
        assert np.isfinite(r.history[col]).all(), col
    assert (r.history["queries"] == 0).all()
    assert r.status == "ok" and r.diverged_at is None
    unreg = solve(g, "mwu", eta=0.1, steps=10, record_every=5, target=None)
    assert np.isnan(unreg.history["reg_expl_last"]).all() and np.isnan(unreg.history["kl_target_last"]).all()
    assert len(solve(g, "mwu", eta=0.1, steps=400, target=None).history) == 201  # default: steps // 200
    with pytest.raises(KeyError, match="unknown history column"):
        r.history["nope"]


def test_average_is_the_uniform_average_of_the_iterates_and_metrics_match_a_manual_loop():
    g = games.random_game(5, num_contexts=2, seed=2, ref="random")
    alg = get_algorithm("omwu", eta=0.7, tau=0.05)
    r = solve(g, alg, steps=37, record_every=37, target=None)
    st, total = alg.init(g.log_ref, g.log_ref), np.zeros((2, 5))
    for _ in range(37):
        st = alg.update(st, exact_signal(g.P, alg.opponents(st)))
        total += np.exp(st.logp)  # pi_1 .. pi_T
    np.testing.assert_allclose(r.last, np.exp(st.logp), atol=1e-15, rtol=0)
    np.testing.assert_allclose(r.average, total / 37, atol=1e-15, rtol=0)
    expl = np.max(np.einsum("cij,cj->ci", g.P, r.average), axis=-1) - 0.5
    assert r.history.last("expl_avg") == pytest.approx(expl.mean(), abs=1e-14)


def test_tol_stops_early_with_status_converged():
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    r = solve(g, "egpo", eta=1.0, tau=0.1, steps=5000, tol=1e-12, record_every=5, init=PI0, target=None)
    assert r.status == "converged" and "< tol" in r.message
    assert r.history["step"][-1] < 200 and r.history.last("reg_expl_last") < 1e-12
    assert r.state.t == r.history["step"][-1]
    unreg = solve(games.rock_paper_scissors(), "mwu", eta=0.1, steps=300, tol=1e-12, init=PI0, target=None)
    assert unreg.status == "ok" and unreg.state.t == 300  # MWU's last iterate never gets there


@dataclasses.dataclass(frozen=True)
class _NaNAfterFive(MWU):
    """MWU that breaks at iteration 5 (a stand-in for an overflowing user rule)."""

    def update(self, state, signal, phase=0):
        st = super().update(state, signal, phase)
        return dataclasses.replace(st, logp=st.logp * np.nan) if st.t >= 5 else st


def test_nan_iterates_raise_or_are_reported():
    g = games.rock_paper_scissors()
    with pytest.raises(ValueError, match="produced NaN at step 5 \\(context 0\\)"):
        solve(g, _NaNAfterFive(eta=0.1), steps=20, record_every=1)
    r = solve(g, _NaNAfterFive(eta=0.1), steps=20, record_every=1, throw=False)
    assert r.status == "diverged" and r.diverged_at == 5 and "NaN" in r.message
    assert r.history["step"][-1] == 4  # nothing non-finite was recorded


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"backend": "jax"}, ValueError, "backend must be 'numpy' or 'torch'"),
        ({"mode": "approximate"}, ValueError, "mode must be 'exact' or 'sampled'"),
        ({"steps": -1}, ValueError, "steps must be >= 0"),
        ({"record_every": 0}, ValueError, "record_every must be >= 1"),
        ({"tol": -1.0}, ValueError, "tol must be finite and > 0"),
        ({"init": [0.5, 0.5]}, ValueError, "init"),
        ({"init": [0.5, 0.6, -0.1]}, ValueError, "init"),
        ({"target": "best"}, ValueError, "target must be 'auto', None or a policy"),
    ],
)
def test_bad_inputs_give_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        solve(games.rock_paper_scissors(), "omd", **{"eta": 0.5, "tau": 0.1, "steps": 5, **kwargs})


def test_bad_game_or_algorithm_type():
    with pytest.raises(TypeError, match="game must be a PreferenceGame"):
        solve(np.eye(3), "mwu", eta=0.1)
    with pytest.raises(TypeError, match="algorithm must be a registered name"):
        solve(games.rock_paper_scissors(), 3, eta=0.1)


def test_zero_steps_returns_the_start():
    r = solve(games.rock_paper_scissors(), "mwu", eta=0.1, steps=0, init=PI0, target=None)
    np.testing.assert_allclose(r.last, PI0)
    np.testing.assert_allclose(r.average, PI0)
    assert len(r.history) == 1


def test_torch_backend_matches_numpy():
    g = games.random_game(4, num_contexts=3, seed=8, ref="random")
    a = solve(g, "egpo", eta=0.5, tau=0.1, steps=200, target=None)
    b = solve(g, "egpo", eta=0.5, tau=0.1, steps=200, target=None, backend="torch")
    np.testing.assert_allclose(b.last.numpy(), a.last, atol=1e-10, rtol=0)
    np.testing.assert_allclose(b.history["reg_expl_last"], a.history["reg_expl_last"], atol=1e-10)


@pytest.mark.parametrize(
    "source",
    [
        "path",
        "text",
    ],
)
def test_result_round_trips_through_json(tmp_path, source):
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    r = solve(g, "nash_md", eta=0.5, tau=0.1, steps=50, record_every=7, init=PI0)
    path = tmp_path / "r.json"
    text = r.to_json(path)
    for back in (SolveResult.from_json(path if source == "path" else text),):
        np.testing.assert_array_equal(back.last, r.last)
        np.testing.assert_array_equal(back.average, r.average)
        assert back.status == r.status and back.diverged_at == r.diverged_at and back.message == r.message
        assert back.settings["algorithm"] == "nash_md" and back.settings["hyperparameters"]["eta"] == 0.5
        for col in COLUMNS:
            a, b = r.history[col], back.history[col]
            assert all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)), col


# ------------------------------------------------------------------------------- blocked exact loop
_BLOCK_CASES = [
    ("egpo", {"eta": 2.0, "tau": 0.1}),
    ("omwu", {"eta": 1.0, "tau": 0.05}),
    ("nash_ema", {"eta": 0.5, "tau": 0.1}),
    ("mwu", {"eta": 0.3}),
    ("omwu", {"eta": 9.0, "tau": 0.1}),  # drifts away: status "diverged" at step 3
    ("nash_md", {"eta": 5.0, "tau": 0.1}),  # status "stalled"
]


@pytest.mark.parametrize("alg,kw", _BLOCK_CASES)
def test_blocked_loop_equals_one_block(alg, kw):
    g = games.random_game(9, num_contexts=23, seed=3, ref="random")
    a = solve(g, alg, steps=41, record_every=3, context_block=None, **kw)
    b = solve(g, alg, steps=41, record_every=3, context_block=5, **kw)  # blocks of 5, 5, 5, 5, 3
    assert a.settings["context_block"] is None and b.settings["context_block"] == 5
    np.testing.assert_allclose(b.last, a.last, atol=1e-12, rtol=0)
    np.testing.assert_allclose(b.average, a.average, atol=1e-12, rtol=0)
    np.testing.assert_allclose(b.state.logp, a.state.logp, atol=1e-12, rtol=0)
    assert b.state.t == a.state.t and set(b.state.memory) == set(a.state.memory)
    for key in a.state.memory:
        np.testing.assert_allclose(b.state.memory[key], a.state.memory[key], atol=1e-12, rtol=0)
    for col in COLUMNS:
        if col != "time":
            np.testing.assert_allclose(b.history[col], a.history[col], atol=1e-12, rtol=1e-12, err_msg=col)
    assert (b.status, b.diverged_at, b.message) == (a.status, a.diverged_at, a.message)
    assert (np.diff(b.history["time"]) >= 0).all()


def test_blocked_loop_continues_like_one_block_and_on_torch():
    g = games.random_game(6, num_contexts=10, seed=4, ref="random")
    a = solve(g, "omwu", eta=1.0, tau=0.1, steps=30, target=None, context_block=None)
    b = solve(g, "omwu", eta=1.0, tau=0.1, steps=30, target=None, context_block=3)
    a2 = solve(g, "omwu", eta=1.0, tau=0.1, steps=10, target=None, state=a.state)
    b2 = solve(g, "omwu", eta=1.0, tau=0.1, steps=10, target=None, state=b.state)  # "prev" memory was joined
    np.testing.assert_allclose(b2.last, a2.last, atol=1e-12, rtol=0)
    t = solve(g, "omwu", eta=1.0, tau=0.1, steps=30, target=None, context_block=3, backend="torch")
    assert t.settings["context_block"] == 3
    np.testing.assert_allclose(t.last.numpy(), a.last, atol=1e-12, rtol=0)


def test_auto_blocks_only_large_games_it_can_block(monkeypatch):
    S = importlib.import_module("nashalign.solve")  # the module (the package exports the function as `solve`)

    g = games.random_game(5, num_contexts=12, seed=5, ref="random")
    assert solve(g, "egpo", eta=1.0, tau=0.1, steps=5, target=None).settings["context_block"] is None  # small P
    monkeypatch.setattr(S, "BLOCK_MIN_BYTES", 0)
    monkeypatch.setattr(S, "BLOCK_BYTES", 4 * 5 * 5 * 8)  # 4 contexts of 5 x 5 float64
    r = solve(g, "egpo", eta=1.0, tau=0.1, steps=5, target=None)
    assert r.settings["context_block"] == 4
    one = solve(g, "egpo", eta=1.0, tau=0.1, steps=5, target=None, context_block=None)
    np.testing.assert_allclose(r.last, one.last, atol=1e-12, rtol=0)
    # anything that needs the whole batch at every record, and unregistered algorithms, run as one block
    assert solve(g, "egpo", eta=1.0, tau=0.1, steps=5, tol=1e-9).settings["context_block"] is None
    assert solve(g, "egpo", eta=1.0, tau=0.1, steps=5, state=r.state).settings["context_block"] is None
    assert solve(g, _NaNAfterFive(eta=0.1), steps=3).settings["context_block"] is None


def test_blocked_loop_falls_back_on_nan():
    g = games.random_game(3, num_contexts=6, seed=1)
    with pytest.raises(ValueError, match="produced NaN at step 5 \\(context 0\\)"):
        solve(g, _NaNAfterFive(eta=0.1), steps=20, record_every=1, context_block=2)
    r = solve(g, _NaNAfterFive(eta=0.1), steps=20, record_every=1, throw=False, context_block=2)
    assert r.status == "diverged" and r.diverged_at == 5 and r.settings["context_block"] is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"context_block": 0}, "context_block must be 'auto', None or a positive int"),
        ({"context_block": "yes"}, "context_block must be 'auto', None or a positive int"),
        ({"context_block": True}, "context_block must be 'auto', None or a positive int"),
        ({"context_block": 2, "tol": 1e-6}, "cannot honour tol"),
        ({"context_block": 2, "mode": "sampled"}, "cannot honour mode='sampled'"),
    ],
)
def test_bad_context_block(kwargs, match):
    g = games.random_game(3, num_contexts=4, seed=0)
    with pytest.raises(ValueError, match=match):
        solve(g, "omd", eta=0.5, tau=0.1, steps=2, target=None, **kwargs)


# ------------------------------------------------------------------------------- mixed precision
def test_float32_P_mixed_precision_reaches_the_float64_equilibrium():
    import torch

    from nashalign.equilibrium import solve_regularized_nash
    from nashalign.metrics import kl_logp

    g = games.random_game(30, num_contexts=4, seed=7, ref="random")
    target = np.log(solve_regularized_nash(g, 0.1))  # float64, from the float64 game
    r = solve(g, "egpo", eta=2.0, tau=0.1, steps=300, p_dtype=np.float32, target=None)
    assert r.settings["p_dtype"] == "float32" and r.settings["dtype"] == "float64"
    assert r.last.dtype == np.float64 and r.state.logp.dtype == np.float64
    assert np.max(kl_logp(target, np.log(r.last))) < 1e-12  # float32 rounding of P moves pi* by ~1e-7 in log space
    # a game stored mixed is used as is (no conversion), blocked or not, and the same on torch
    g32 = g.to("numpy", p_dtype=np.float32)
    assert g32.P.dtype == np.float32 and g32.ref.dtype == np.float64 and g32.policy(np.full(30, 1 / 30)).dtype == np.float64
    b = solve(g32, "egpo", eta=2.0, tau=0.1, steps=300, p_dtype=np.float32, target=None, context_block=3)
    np.testing.assert_allclose(b.last, r.last, atol=1e-12, rtol=0)
    t = solve(g, "egpo", eta=2.0, tau=0.1, steps=300, p_dtype=torch.float32, target=None, backend="torch")
    assert t.last.dtype == torch.float64
    assert np.max(kl_logp(target, np.log(t.last.numpy()))) < 1e-12
    with pytest.raises(ValueError, match="p_dtype \\(mixed precision\\) is for mode='exact'"):
        solve(g, "egpo", eta=2.0, tau=0.1, steps=3, p_dtype=np.float32, mode="sampled")
    with pytest.raises(ValueError, match="floating dtypes"):
        solve(g, "egpo", eta=2.0, tau=0.1, steps=3, p_dtype=np.int32)


def test_option_objects_match_the_old_keywords(tmp_path):
    """``blocking=``/``precision=``/``checkpointing=`` run exactly what ``context_block=``/``p_dtype=``/
    ``checkpoint=`` run; giving one setting both ways, or a wrong option type, raises naming it."""
    g = games.random_game(4, num_contexts=6, seed=2)
    kw = dict(eta=0.5, tau=0.1, steps=30, target=None)
    old = solve(g, "omwu", context_block=2, p_dtype=np.float32, **kw)
    new = solve(g, "omwu", blocking=na.BlockOptions(2), precision=na.PrecisionOptions(p_dtype=np.float32), **kw)
    assert np.array_equal(old.last, new.last) and np.array_equal(old.average, new.average)
    assert np.array_equal(old.history["expl_last"], new.history["expl_last"])
    assert new.settings["context_block"] == 2 and new.settings["p_dtype"] == "float32"
    a = solve(g, "egpo", checkpoint=tmp_path / "a.npz", checkpoint_every=10, **kw)
    b = solve(g, "egpo", checkpointing=na.CheckpointOptions(tmp_path / "b.npz", every=10), **kw)
    assert np.array_equal(a.last, b.last)
    assert np.array_equal(np.load(tmp_path / "a.npz")["logp"], np.load(tmp_path / "b.npz")["logp"])
    with pytest.raises(ValueError, match="context_block= and blocking= were both given"):
        solve(g, "egpo", context_block=2, blocking=na.BlockOptions(None), **kw)
    with pytest.raises(TypeError, match="precision must be a nashalign.PrecisionOptions"):
        solve(g, "egpo", precision=np.float32, **kw)
    with pytest.raises(ValueError, match="checkpoint_every"):
        solve(g, "egpo", checkpointing=na.CheckpointOptions(tmp_path / "c.npz", every=-1), **kw)
