"""Sampled-feedback mode: every algorithm learns from noisy Bernoulli preference queries."""

from __future__ import annotations

import cases  # tests/algorithms/cases.py (tests/conftest.py puts tests/algorithms on sys.path)
import numpy as np
import pytest

import nashalign as na
from nashalign import games
from nashalign.algorithms import ALGORITHMS
from nashalign.sampled import SampledRunner

SETTINGS = {name: c.sampled for name, c in cases.CASES.items()}  # (eta, tau) that converge in the exact mode
EXTRA = {name: c.sampled_extra for name, c in cases.CASES.items()}  # hyperparameters beyond (eta, tau)


def population_game() -> na.PreferenceGame:
    # three Bradley-Terry raters with different rankings; the average preference is intransitive
    rewards = 5.0 * np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0], [1.0, 0.0, 2.0, -1.0]])
    return games.population(rewards, weights=[0.4, 0.35, 0.25], ref=[0.4, 0.3, 0.2, 0.1])


GAMES = {  # (game, a far-from-equilibrium start)
    "rps": (lambda: games.rock_paper_scissors(ref=[0.7, 0.2, 0.1]), [0.9, 0.05, 0.05]),
    "population": (population_game, [0.05, 0.05, 0.85, 0.05]),
}


def test_settings_cover_the_registry():
    assert set(SETTINGS) == set(ALGORITHMS)


@pytest.mark.parametrize("game_name", sorted(GAMES))
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_sampled_mode_moves_toward_the_equilibrium(name, game_name):
    make, init = GAMES[game_name]
    game = make()
    eta, tau = SETTINGS[name]
    extra = EXTRA.get(name, {})
    res = na.solve(game, name, eta=eta, tau=tau, **extra, steps=120, mode="sampled", batch=128, inner_steps=20, seed=0,
                   init=init, record_every=20, lr=0.1)
    h = res.history
    assert h.last("queries") > 0 and h["queries"][0] == 0
    if tau > 0:  # last-iterate methods: the regularised exploitability of the last iterate drops
        assert h.last("reg_expl_last") < 0.25 * h["reg_expl_last"][0], h.as_dict()
    else:  # no-regret methods: the average iterate's exploitability drops
        assert h.last("expl_avg") < 0.5 * h["expl_avg"][0], h.as_dict()


@pytest.mark.parametrize("name", ["egpo", "nash_md"])
def test_last_iterate_approaches_regularised_equilibrium_as_batch_grows(name):
    game = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    kls = []
    for batch in (16, 512):
        res = na.solve(game, name, eta=0.5, tau=0.1, steps=60, mode="sampled", batch=batch, inner_steps=50,
                       seed=1, record_every=5, lr=0.1)
        kls.append(float(np.mean(res.history["kl_target_last"][-6:])))  # the last iterate's KL, averaged over time
    assert kls[1] < 0.5 * kls[0], kls
    assert kls[1] < 2e-2, kls


def test_query_counts_follow_the_estimator():
    game = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    for name, est, per_context in [("inpo", "pair", 1), ("egpo", "opponent", 2 * 2), ("sppo", "winrate", 6)]:
        eta, tau = SETTINGS[name]
        alg = na.get_algorithm(name, eta=eta, tau=tau)
        runner = SampledRunner(game, alg, batch=10, inner_steps=1, seed=0, estimator=est)
        runner.iterate(alg.init(game.log_ref, game.log_ref))
        # pair: 1 query per context; opponent: k=2 responses x 1 opponent sample, per phase; winrate: K(K-1)/2
        assert runner.queries == 10 * per_context, (name, runner.queries)


def test_torch_backend_matches_numpy_backend_in_sampled_mode():
    game = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    a = na.solve(game, "egpo", eta=0.5, tau=0.1, steps=5, mode="sampled", batch=32, inner_steps=5, seed=3)
    b = na.solve(game, "egpo", eta=0.5, tau=0.1, steps=5, mode="sampled", batch=32, inner_steps=5, seed=3,
                 backend="torch")
    np.testing.assert_allclose(np.asarray(b.last), a.last, atol=1e-12)


def test_bad_sampled_settings_raise_clear_errors():
    game = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    with pytest.raises(ValueError, match="estimator must be one of"):
        na.solve(game, "egpo", eta=0.5, tau=0.1, steps=1, mode="sampled", estimator="magic")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        na.solve(game, "egpo", eta=0.5, tau=0.1, steps=1, mode="sampled", optimizer="lion")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        na.solve(game, "egpo", eta=0.5, tau=0.1, steps=1, mode="sampled", batch=0)
    with pytest.raises(ValueError, match="single opponent"):
        na.solve(game, "omwu", eta=0.3, tau=0.1, steps=1, mode="sampled", estimator="pair")
    with pytest.raises(ValueError, match="policy-gradient form needs responses from pi_t"):
        na.solve(game, "nash_md", eta=0.5, tau=0.1, form="pg", steps=1, mode="sampled", estimator="pair")


@pytest.mark.parametrize("name", ["spo", "sppo", "mwu"])
def test_on_policy_self_play_collapse_at_large_eta_is_reported(name):
    """eta = 2: the last iterate runs onto one response, every sample is identical, the signal vanishes; solve
    says so in ``status`` (issue 12).  A small step (eta = 0.05) does not collapse over the same run."""
    game = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    kw = dict(tau=0.0, steps=80, mode="sampled", batch=64, inner_steps=20, seed=0, init=[0.9, 0.05, 0.05], lr=0.1)
    res = na.solve(game, name, eta=2.0, **kw)
    assert res.status == "collapsed", (res.status, res.message)
    assert 0 < res.diverged_at <= 80 and "every sample" in res.message and "eta" in res.message
    assert float(np.max(res.last)) > 0.99  # it really sits on one response ...
    assert na.exploitability(game, res.last) > 0.1  # ... which is no equilibrium
    small = na.solve(game, name, eta=0.05, **kw)
    assert small.status == "ok", small.message


def test_collapse_onto_a_condorcet_winner_is_not_reported():
    """A pure equilibrium is where self-play should end: all samples identical there is no failure."""
    P = np.array([[0.5, 0.9, 0.9], [0.1, 0.5, 0.6], [0.1, 0.4, 0.5]])  # response 0 beats both others
    res = na.solve(na.PreferenceGame(P), "mwu", eta=2.0, tau=0.0, steps=40, mode="sampled", batch=32,
                   inner_steps=10, seed=0, lr=0.1)
    assert float(res.last[0]) > 0.99 and res.status == "ok", (res.last, res.message)
