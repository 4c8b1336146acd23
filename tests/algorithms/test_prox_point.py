"""Prox-point rules (mpo, comal, nash_prox) and optimistic OMD (onpo): what each paper promises, on exact runs.

* the centres of MPO/COMAL/Nash-Prox (beta = 0) take the last iterate to the LP's *unregularised* Nash
  equilibrium, where OMD with the same tau stops at pi*_tau;
* Nash-Prox with beta > 0 converges to pi*_beta (cvxpy), not to pi*_tau of its prox games;
* ``solve_minimax`` is COMAL run by ``solve`` (one definition);
* MPO's step is the paper's MMD step; ONPO plays against the previous played policy.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from nashalign import games, solve, solve_nash
from nashalign.algorithms import MPO, ONPO, get_algorithm
from nashalign.equilibrium import solve_regularized_nash
from nashalign.metrics import kl_logp
from nashalign.prox import solve_minimax
from nashalign.solve import exact_signal


@functools.cache
def game():
    return games.random_game(6, num_contexts=3, seed=0, ref="random")


@functools.cache
def nash() -> np.ndarray:
    return np.asarray(solve_nash(game()))


PROX = {
    "mpo": {"eta": 0.5, "tau": 0.1, "every": 20},
    "comal": {"eta": 2.0, "tau": 0.1, "every": 10},
    "nash_prox": {"eta": 1.0, "tau": 0.2, "beta": 0.0, "every": 20},
}


@pytest.mark.parametrize("name", sorted(PROX))
def test_last_iterate_reaches_the_unregularised_nash_equilibrium(name):
    res = solve(game(), name, steps=5000, target=None, record_every=1000, **PROX[name])
    expl = res.history["expl_last"]
    assert expl[-1] < 1e-4 and expl[-1] < 0.2 * expl[1], expl  # still going down between 1000 and 5000 steps
    np.testing.assert_allclose(res.last, nash(), atol=2e-3)
    # OMD with the same tau and a fixed reference stops at pi*_tau: exploitability ~1e-1, not 0
    omd = solve(game(), "omd", eta=0.5, tau=PROX[name]["tau"], steps=5000, target=None, record_every=1000)
    assert omd.history.last("expl_last") > 1e-2


def test_nash_prox_with_beta_converges_to_pi_star_beta_not_to_its_prox_games_tau():
    g = game()
    res = solve(g, "nash_prox", eta=1.0, tau=0.3, beta=0.1, every=20, steps=6000, target=None)
    star_beta = np.log(solve_regularized_nash(g, 0.1))
    star_tau = np.log(solve_regularized_nash(g, 0.3))
    last = np.log(res.last)
    assert float(np.max(kl_logp(star_beta, last))) < 1e-8
    assert float(np.min(kl_logp(star_tau, last))) > 1e-3


@pytest.mark.parametrize("name", ["mpo", "comal"])
def test_nash_equilibrium_as_magnet_is_a_fixed_point_and_pi_star_tau_is_not(name):
    alg = get_algorithm(name, **PROX[name])
    g = game()
    with np.errstate(divide="ignore"):
        ne = np.log(nash())  # -inf off the equilibrium's support
    st = alg.init(ne, ne)
    for _ in range(3):
        for ph in range(alg.phases):
            st = alg.update(st, exact_signal(g.P, alg.opponents(st, ph)), ph)
    np.testing.assert_allclose(np.exp(st.logp), nash(), atol=1e-10)
    # pi*_tau of the original reference is the fixed point of one prox game only: once it is the magnet it moves
    star = np.log(solve_regularized_nash(g, alg.tau))
    st = alg.init(star, star)
    for ph in range(alg.phases):
        st = alg.update(st, exact_signal(g.P, alg.opponents(st, ph)), ph)
    assert np.abs(np.exp(st.logp) - np.exp(star)).max() > 1e-3


def test_solve_minimax_is_comal_run_by_solve():
    g = game()
    mm = solve_minimax(g, tau=0.1, eta=2.0, inner_steps=5, max_outer=40, tol=1e-300, check_every=40)
    res = solve(g, "comal", eta=2.0, tau=0.1, every=5, steps=200, target=None, init=g.ref)
    assert mm.outer_steps == 40
    np.testing.assert_array_equal(mm.policy, res.last)


def test_mpo_from_paper_is_the_mmd_step():
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    eta_m, tau = 3.0, 0.4
    alg = MPO.from_paper(eta_m, tau, every=5)
    pi0 = np.array([0.6, 0.3, 0.1])
    st0 = alg.init(np.log(pi0)[None], g.log_ref)
    st = alg.update(st0, exact_signal(g.P, alg.opponents(st0)))
    mu = np.array([0.7, 0.2, 0.1])
    mmd = (pi0 * mu ** (eta_m * tau) * np.exp(eta_m * g.P[0] @ pi0)) ** (1 / (1 + eta_m * tau))
    np.testing.assert_allclose(np.exp(st.logp[0]), mmd / mmd.sum(), atol=1e-15)


def test_centre_resets_every_k_iterations_and_trainers_see_when():
    alg = get_algorithm("mpo", eta=0.5, tau=0.1, every=4)
    assert [t for t in range(13) if alg.recentres_at(t)] == [4, 8, 12]
    g = game()
    st = alg.init(g.log_ref, g.log_ref)
    for t in range(1, 9):
        st = alg.update(st, exact_signal(g.P, alg.opponents(st)))
        if t % 4 == 0:
            np.testing.assert_array_equal(st.logmu, st.logp)
        else:
            assert np.abs(st.logmu - st.logp).max() > 1e-6


def test_onpo_plays_against_the_previous_played_policy():
    alg = ONPO(eta=0.5, tau=0.1)
    assert [o.kind for o in alg.neural_opponents(0, 0)] == ["half"]
    assert [o.kind for o in alg.neural_opponents(0, 1)] == ["half"]
    g = game()
    st = alg.init(g.log_ref, g.log_ref)
    st = alg.update(st, exact_signal(g.P, alg.opponents(st, 0)), 0)
    played = st.memory["half"]
    st = alg.update(st, exact_signal(g.P, alg.opponents(st, 1)), 1)
    assert st.t == 1
    np.testing.assert_array_equal(st.memory["half"], played)  # kept for the next iteration's phase 0
    np.testing.assert_array_equal(alg.opponents(st, 0)[0].logq, played)


def test_onpo_played_sequence_is_omwu_at_tau_zero_and_differs_with_tau():
    """SPEC.md 14.4: with tau = 0 the two-sequence rule's played policy is exactly single-sequence OMWU."""
    g = games.random_game(6, num_contexts=2, seed=1, ref="random")
    gaps = []
    for tau in (0.0, 0.1):
        a, b = ONPO(eta=0.5, tau=tau), get_algorithm("omwu", eta=0.5, tau=tau)
        sa, sb = a.init(g.log_ref, g.log_ref), b.init(g.log_ref, g.log_ref)
        for _ in range(50):
            for ph in range(2):
                sa = a.update(sa, exact_signal(g.P, a.opponents(sa, ph)), ph)
            sb = b.update(sb, exact_signal(g.P, b.opponents(sb)))
        gaps.append(float(np.abs(sa.memory["half"] - sb.logp).max()))
    assert gaps[0] < 1e-12 and gaps[1] > 1e-4, gaps


@pytest.mark.parametrize(
    "name,hp,per_context",
    [
        ("mpo", {"eta": 0.5, "tau": 0.1}, 1),  # pair: one pair from pi_t, one label
        ("nash_prox", {"eta": 0.05, "tau": 0.5, "beta": 0.1}, 1),  # pair (online IPO's estimator)
        ("comal", {"eta": 0.5, "tau": 0.1}, 2 * 2),  # opponent: k = 2 responses x 1 opponent sample, 2 phases
        ("onpo", {"eta": 0.5, "tau": 0.1}, 2 * 2),  # opponent, against the played policy in both phases
    ],
)
def test_sampled_query_counts_follow_the_estimator(name, hp, per_context):
    from nashalign.sampled import SampledRunner

    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    alg = get_algorithm(name, **hp)
    runner = SampledRunner(g, alg, batch=10, inner_steps=1, seed=0)
    st = runner.iterate(alg.init(g.log_ref, g.log_ref))
    assert runner.queries == 10 * per_context
    assert st.t == 1 and np.isfinite(st.logp).all()


def test_solve_auto_target_is_the_prox_rules_own_target():
    g = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    res = solve(g, "nash_prox", eta=0.3, tau=0.5, beta=0.1, every=20, steps=3000)
    star = np.log(solve_regularized_nash(g, 0.1))
    assert res.history.last("kl_target_last") < 1e-8  # KL to pi*_beta (beta = 0.1), not to pi*_0.5
    assert float(kl_logp(star, np.log(np.asarray(res.last)[None]))[0]) < 1e-8
    assert np.isnan(solve(g, "mpo", eta=0.5, tau=0.1, steps=10).history.last("kl_target_last"))  # NE: no cvxpy target


def test_comal_with_the_official_codes_inpo_inner_step_is_mpo_and_from_code_maps_comal_sh():
    import torch

    from nashalign.algorithms import COMAL, LossInputs

    alg = COMAL.from_code()  # comal.sh: eta = 0.002 (inverse step), tau/eta = 1/3, reference every 12 iterations
    assert (alg.inner, alg.every, alg.phases, alg.estimator) == ("inpo", 12, 1, "pair")
    assert alg.eta == pytest.approx(500.0) and alg.eta * alg.tau == pytest.approx(1 / 3)
    a = get_algorithm("comal", eta=0.5, tau=0.1, every=3, inner="inpo")
    b = get_algorithm("mpo", eta=0.5, tau=0.1, every=3)
    g = game()
    sa, sb = a.init(g.log_ref, g.log_ref), b.init(g.log_ref, g.log_ref)
    for _ in range(10):
        sa = a.update(sa, exact_signal(g.P, a.opponents(sa)))
        sb = b.update(sb, exact_signal(g.P, b.opponents(sb)))
    np.testing.assert_array_equal(sa.logp, sb.logp)
    np.testing.assert_array_equal(sa.logmu, sb.logmu)
    gen = torch.Generator().manual_seed(0)
    x = [-torch.rand(4, 2, generator=gen, dtype=torch.float64) * 3 for _ in range(4)]
    inp = LossInputs(x[0], x[1], x[2], torch.rand(4, 2, generator=gen, dtype=torch.float64), None, x[1], 0)
    torch.testing.assert_close(a.loss(inp).loss, b.loss(inp).loss, rtol=0, atol=0)  # so mpo's exactness covers it
