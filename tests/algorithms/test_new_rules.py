"""Properties of the rules added for issue 16 (APO, MNPO, RSPO, XPO) beyond the shared contract."""

from __future__ import annotations

import numpy as np
import pytest

from nashalign import games, solve
from nashalign.algorithms import get_algorithm
from nashalign.solve import exact_signal

GAME = games.random_game(6, num_contexts=4, seed=3, ref="random")


def _run(name: str, steps: int = 60, **hp) -> np.ndarray:
    return solve(GAME, name, steps=steps, target=None, **hp).last


@pytest.mark.parametrize(
    "new,old",
    [
        (("apo", {"eta": 0.4, "tau": 0.0, "alpha": 0.0}), ("sppo", {"eta": 0.4, "tau": 0.0})),
        (("mnpo", {"eta": 0.5, "tau": 0.2, "lam": 0.0}), ("inpo", {"eta": 0.5, "tau": 0.2})),
        (("rspo", {"eta": 0.5, "tau": 0.2, "tau_forward": 0.0}), ("omd", {"eta": 0.5, "tau": 0.2})),
    ],
)
def test_new_rules_reduce_to_the_rule_they_extend(new, old):
    np.testing.assert_allclose(_run(new[0], **new[1]), _run(old[0], **old[1]), atol=1e-13, rtol=0)
    # ... and the new hyperparameter changes the trajectory
    hp = dict(new[1])
    key = {"apo": "alpha", "mnpo": "lam", "rspo": "tau_forward"}[new[0]]
    hp[key] = 0.3
    assert np.abs(_run(new[0], **hp) - _run(old[0], **old[1])).max() > 1e-4


def test_rspo_fixed_point_is_the_equilibrium_of_the_forward_plus_reverse_kl_game():
    """At convergence P(y > pi) - tau log(pi/mu)(y) + tau_f mu(y)/pi(y) is constant in y (every context)."""
    tau, tf = 0.2, 0.1
    pi = _run("rspo", steps=3000, eta=0.5, tau=tau, tau_forward=tf)
    mu = GAME.ref
    g = np.einsum("cij,cj->ci", GAME.P, pi) - tau * np.log(pi / mu) + tf * mu / pi
    np.testing.assert_allclose(g - g.mean(-1, keepdims=True), 0.0, atol=1e-10)
    star = np.asarray(solve(GAME, "omd", eta=0.5, tau=tau, steps=3000, target=None).last)
    assert np.abs(pi - star).max() > 1e-3  # the forward KL moves it off pi*_tau


def test_xpo_step_raises_when_the_bonus_exceeds_four_times_the_least_probability():
    alg = get_algorithm("xpo", eta=0.1, tau=0.5, alpha=0.05)
    logp = np.log(np.array([[0.985, 0.01, 0.005]]))
    g = games.rock_paper_scissors(ref=[0.5, 0.3, 0.2])
    st = alg.init(logp, g.log_ref)
    with pytest.raises(ValueError, match=r"defined for alpha < 4 min pi_t\(y\)"):
        alg.update(st, exact_signal(g.P, alg.opponents(st)))
    ok = alg.replace(alpha=0.019)  # 4 * 0.005 = 0.02
    nxt = ok.update(st, exact_signal(g.P, ok.opponents(st)))
    assert np.isfinite(nxt.logp).all()


def test_xpo_fixed_point_is_pi_star_tau_the_bonus_vanishes_there():
    """At pi_{t+1} = pi_t the bonus gradient alpha (pi_t - pi) is zero: XPO's fixed point is pi*_tau (tau = 1)."""
    from nashalign.equilibrium import solve_regularized_nash

    star = solve_regularized_nash(GAME, 1.0)
    last = _run("xpo", steps=200, eta=0.1, tau=1.0, alpha=1e-3)
    np.testing.assert_allclose(last, star, atol=1e-9)


@pytest.mark.parametrize(
    "name,hp,per_prompt",
    [
        ("apo", {"eta": 0.3, "tau": 0.0}, 2 * 2),  # opponent: k = 2 responses x 1 sample x 2 opponents (pi_t, pi_{t-1})
        ("mnpo", {"eta": 0.5, "tau": 0.1}, 1),  # pair: one query per pair from pi_t
        ("rspo", {"eta": 0.5, "tau": 0.1}, 6),  # winrate: K(K-1)/2 with K = 4
        ("xpo", {"eta": 0.1, "tau": 1.0}, 1),  # pair
    ],
)
def test_sampled_query_counts_of_the_new_rules(name, hp, per_prompt):
    from nashalign.sampled import SampledRunner

    game = games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    alg = get_algorithm(name, **hp)
    runner = SampledRunner(game, alg, batch=10, inner_steps=1, seed=0)
    st = runner.iterate(alg.init(game.log_ref, game.log_ref))
    assert runner.queries == 10 * per_prompt
    st = runner.iterate(st)  # the second iteration: APO's and MNPO's previous iterate is used
    assert runner.queries == 2 * 10 * per_prompt
    assert np.isfinite(st.logp).all()


@pytest.mark.parametrize("name", ["apo", "mnpo"])
def test_sampled_loss_reads_the_previous_iterate(name):
    """With a huge sample the sampled step approaches the exact one, which depends on pi_{t-1}."""
    from nashalign.sampled import SampledRunner

    game = games.rock_paper_scissors(ref=[0.5, 0.3, 0.2])
    hp = {"apo": {"eta": 0.5, "tau": 0.0, "alpha": 0.5}, "mnpo": {"eta": 1.0, "tau": 0.2, "lam": 0.8}}[name]
    alg = get_algorithm(name, **hp)
    st = alg.init(np.log([[0.6, 0.3, 0.1]]), game.log_ref)
    st = alg.update(st, exact_signal(game.P, alg.opponents(st)))  # now pi_{t-1} != pi_t
    exact = alg.update(st, exact_signal(game.P, alg.opponents(st)))
    runner = SampledRunner(game, alg, batch=20000, inner_steps=300, lr=0.05, seed=3, estimator="opponent", k=2)
    got = runner.iterate(st)
    err = np.abs(np.exp(got.logp) - np.exp(exact.logp)).max()
    same_anchor = alg.replace(**({"alpha": 0.0} if name == "apo" else {"lam": 0.0}))
    other = same_anchor.update(st, exact_signal(game.P, same_anchor.opponents(st)))
    assert err < 0.02, err
    assert np.abs(np.exp(other.logp) - np.exp(exact.logp)).max() > 5 * err  # pi_{t-1} matters at this size


def test_mnpo_schedule_that_breaks_eta_tau_raises_at_that_step():
    alg = get_algorithm("mnpo", eta=lambda t: 0.5 if t < 2 else 20.0, tau=0.1)
    g = games.rock_paper_scissors()
    st = alg.init(g.log_ref, g.log_ref)
    for _ in range(2):
        st = alg.update(st, exact_signal(g.P, alg.opponents(st)))
    with pytest.raises(ValueError, match=r"eta_2 = 20 with tau = 0.1: eta \* tau must be <= 1"):
        alg.update(st, exact_signal(g.P, alg.opponents(st)))
