"""Convergence against the exact equilibria (cvxpy), with the reference numbers of SPEC.md section 12.

Each test runs the exact tabular dynamics through :func:`nashalign.solve` and compares with an
independent ground truth: ``solve_regularized_nash`` (cvxpy + polish), a closed-form regret bound, or
the measured numbers of SPEC.md 3.1 and 12.  Rates are measured from the recorded history.

Where the dynamics are deterministic, the values are also pinned exactly: each is recomputed by the naive
one-context loops of ``reference_steps.py`` (plain Python floats, no nashalign code) and compared at
``rtol = 1e-9``; the 6-digit literals in the tests are those reference values, so a change of the
reference steps is caught too.  (Measured agreement library vs reference: <= 3e-14 absolute on every
quantity below, 1.3e-9 relative on a KL of 1.7e-7.)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import reference_steps
from scipy.special import logsumexp

from nashalign import games, schedules, solve
from nashalign.equilibrium import solve_regularized_nash

MU = np.array([0.7, 0.2, 0.1])  # SPEC.md 12(b)/(d) reference
PI0 = np.array([0.6, 0.3, 0.1])  # SPEC.md 12(a)/(b) start


@functools.cache
def rps_mu():
    return games.rock_paper_scissors(ref=MU)


@functools.cache
def rand_game():
    return games.random_game(6, num_contexts=4, seed=1, ref="random")


@functools.cache
def star(which: str, tau: float) -> np.ndarray:
    return solve_regularized_nash(rps_mu() if which == "rps" else rand_game(), tau)


def kl(p, q):
    p, q = np.asarray(p), np.asarray(q)
    return float(np.sum(p * (np.log(p) - np.log(q)), axis=-1).mean())


def reference_trajectory(
    name: str, hp: dict, game, pi0, steps: int, at: set[int]
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """``({t: log pi_t for t in at}, mean of pi_1..pi_steps)`` from the naive loops of ``reference_steps.py``."""
    P, logmu = game.P[0].tolist(), game.log_ref[0].tolist()
    lp = [math.log(v) for v in pi0]
    mem = reference_steps.initial_memory(name, lp)
    snaps, total = {}, np.zeros(len(lp))
    for t in range(1, steps + 1):
        lp, mem = reference_steps.step_one_context(name, hp, P, lp, logmu, mem)
        total += np.exp(lp)
        if t in at:
            snaps[t] = np.array(lp)
    return snaps, total / steps


def expl_of(game, logp) -> float:
    """``max_y P(y > pi) - 1/2`` for one context."""
    return float(np.max(game.P[0] @ np.exp(logp)) - 0.5)


EXACT = {"rtol": 1e-9, "atol": 1e-13}  # library vs reference: same recurrence, different arithmetic order


def per_step_rate(history, lo=1e-13, hi=1e-4) -> float:
    """exp(slope) of log KL(pi*||pi_t) against t, fitted where lo < KL < hi (the linear regime)."""
    k, s = history["kl_target_last"], history["step"]
    m = (k > lo) & (k < hi)
    assert m.sum() >= 5, "too few points in the linear regime"
    return float(np.exp(np.polyfit(s[m], np.log(k[m]), 1)[0]))


# ------------------------------------------------------------------- linear last-iterate convergence
@pytest.mark.parametrize("name", ["egpo", "omd", "inpo", "omwu"])
@pytest.mark.parametrize("eta,tau", [(0.5, 0.1), (1.0, 0.1)])
def test_last_iterate_converges_linearly_on_random_games(name, eta, tau):
    r = solve(rand_game(), name, eta=eta, tau=tau, steps=400, record_every=1, target=star("rand", tau))
    assert r.history.last("kl_target_last") < 1e-10
    assert r.history.last("reg_expl_last") < 1e-12
    rate = per_step_rate(r.history)
    # SPEC.md 5.1 conjectures the EGPO rate (1 - eta tau)^t [unverified]; measured on this game the KL
    # contracts by ~(1 - eta tau)^2 per step for all four rules at these step sizes (EGPO 0.902 / 0.808,
    # OMD = INPO 0.904 / 0.818, OMWU 0.902 for eta = 0.5 / 1).  Assert the conservative bound and the measurement.
    assert rate < 1 - eta * tau
    assert rate < (1 - eta * tau) ** 2 + 0.015


def test_egpo_is_faster_than_omd_when_the_step_is_large_for_tau():
    """tau = 0.02, eta = 1: EGPO's KL rate is ~(1 - eta tau)^2 = 0.960, OMD's only ~0.980 (SPEC.md 2)."""
    rates = {}
    for name in ("egpo", "omd"):
        r = solve(rand_game(), name, eta=1.0, tau=0.02, steps=1000, record_every=5, target=star("rand", 0.02))
        assert r.history.last("kl_target_last") < 1e-9
        rates[name] = per_step_rate(r.history)
    assert rates["egpo"] < (1 - 0.02) ** 2 + 0.005
    assert rates["egpo"] < rates["omd"] - 0.01 < 0.99


# ------------------------------------------------------------------------------------------- Nash-MD
@pytest.mark.parametrize(
    "T,spec_kl,exact_kl", [(100, 4.7e-4, 2.28543e-4), (1000, 6.9e-6, 8.52143e-6), (10_000, 1.5e-7, 1.66952e-7)]
)
def test_nash_md_with_the_theorem_step_converges_below_the_bound(T, spec_kl, exact_kl):
    """SPEC.md 3.1: eta = log T/(tau T), RPS with mu = (0.7, 0.2, 0.1), tau = 0.1."""
    tau = 0.1
    ps = star("rps", tau)
    r = solve(rps_mu(), "nash_md", eta=schedules.nash_md_theorem(tau, T), tau=tau, steps=T, init=PI0,
              record_every=T, target=ps)
    got = r.history.last("kl_target_last")
    bound = (kl(ps, PI0) + 2 * math.log(T) / tau**2) / T  # Munos et al. Thm 1 (SPEC.md 3.1)
    assert got < bound / 100
    # measured 2.3e-4, 8.5e-6, 1.7e-7 against SPEC's 4.7e-4, 6.9e-6, 1.5e-7: same order of magnitude
    assert spec_kl / 3 < got < spec_kl * 3
    # exact: the reference recurrence at the same constant step
    ref, _ = reference_trajectory("nash_md", {"eta": math.log(T) / (tau * T), "tau": tau}, rps_mu(), PI0, T, {T})
    assert got == pytest.approx(kl(ps, np.exp(ref[T])), rel=EXACT["rtol"], abs=EXACT["atol"])
    assert got == pytest.approx(exact_kl, rel=1e-5)


@pytest.mark.parametrize(
    "eta,spec_kl,steps,exact_kl", [(0.1, 2.4e-5, 4000, 2.40185e-5), (1.0, 2.8e-3, 600, 2.79439e-3)]
)
def test_nash_md_with_a_constant_step_stops_at_its_biased_fixed_point(eta, spec_kl, steps, exact_kl):
    """SPEC.md 12(b): KL(pi*||pi_T) = 2.4e-5 (eta 0.1), 2.8e-3 (eta 1) at T = 2e4; the limit is reached
    long before (the contraction is ~(1 - eta tau) per step), so fewer steps give the same numbers."""
    tau = 0.1
    r = solve(rps_mu(), "nash_md", eta=eta, tau=tau, steps=steps, init=PI0, record_every=steps, target=star("rps", tau))
    got = r.history.last("kl_target_last")
    assert spec_kl / 1.5 < got < spec_kl * 1.5  # measured 2.40e-5 and 2.79e-3
    ref, _ = reference_trajectory("nash_md", {"eta": eta, "tau": tau}, rps_mu(), PI0, steps, {steps})
    assert got == pytest.approx(kl(star("rps", tau), np.exp(ref[steps])), rel=EXACT["rtol"], abs=EXACT["atol"])
    assert got == pytest.approx(exact_kl, rel=1e-5)
    # ... and the limit solves pi = BR_tau(mix_{eta tau}(pi, mu)) (SPEC.md 1(d)), not pi = BR_tau(pi)
    lp, lmu = np.log(r.last), np.log(MU)
    m = (1 - eta * tau) * lp + eta * tau * lmu
    m -= logsumexp(m)
    br = lmu + rps_mu().P[0] @ np.exp(m) / tau
    np.testing.assert_allclose(lp, br - logsumexp(br), atol=1e-10)


def test_nash_md_bias_is_linear_in_the_step():
    """KL(pi*||fixed point) ~ c eta^2, i.e. the bias O(eta) (SPEC.md 1(d)); measured c = 2.4e-3..2.8e-3."""
    tau, kls = 0.1, {}
    for eta, steps in ((0.1, 4000), (0.3, 1500), (1.0, 600)):
        r = solve(rps_mu(), "nash_md", eta=eta, tau=tau, steps=steps, record_every=steps, target=star("rps", tau))
        kls[eta] = r.history.last("kl_target_last")
    c = {eta: v / eta**2 for eta, v in kls.items()}
    assert max(c.values()) / min(c.values()) < 1.5, c
    exact_c = {0.1: 2.40185e-3, 0.3: 2.48182e-3, 1.0: 2.79439e-3}  # the reference loops' KL / eta^2
    for eta, steps in ((0.1, 4000), (0.3, 1500), (1.0, 600)):
        ref, _ = reference_trajectory("nash_md", {"eta": eta, "tau": tau}, rps_mu(), MU, steps, {steps})
        ref_kl = kl(star("rps", tau), np.exp(ref[steps]))
        assert kls[eta] == pytest.approx(ref_kl, rel=EXACT["rtol"], abs=EXACT["atol"])
        assert c[eta] == pytest.approx(exact_c[eta], rel=1e-5)


@pytest.mark.parametrize("mixture,spec_expl,exact_expl", [(0.5, 0.280, 0.280147), (0.125, 0.096, 0.0955437)])
def test_nash_md_with_a_free_mixture_converges_to_the_biased_point(mixture, spec_expl, exact_expl):
    """SPEC.md 12(d), tau = 0.1: unregularised expl 0.280 (mixture 0.5), 0.096 (0.125), 0.055 at pi*_tau."""
    tau = 0.1
    r = solve(rps_mu(), "nash_md", eta=0.5, tau=tau, mixture=mixture, steps=1500, record_every=1500, target=None)
    assert abs(r.history.last("expl_last") - spec_expl) < 1.5e-3
    hp = {"eta": 0.5, "tau": tau, "mixture": mixture}
    ref, _ = reference_trajectory("nash_md", hp, rps_mu(), MU, 1500, {1500})
    assert r.history.last("expl_last") == pytest.approx(expl_of(rps_mu(), ref[1500]), rel=EXACT["rtol"], abs=EXACT["atol"])
    assert r.history.last("expl_last") == pytest.approx(exact_expl, rel=1e-5)
    pi = r.last
    m = (1 - mixture) * np.log(pi) + mixture * np.log(MU)
    br = np.log(MU) + rps_mu().P[0] @ np.exp(m - logsumexp(m)) / tau  # pi = BR_tau(mix_beta(pi, mu))
    np.testing.assert_allclose(np.log(pi), br - logsumexp(br), atol=1e-9)
    ps = star("rps", tau)
    expl_star = float(np.max(rps_mu().P[0] @ ps) - 0.5)
    assert abs(expl_star - 0.055) < 1e-3
    assert expl_star == pytest.approx(0.0545895, rel=1e-5)
    # SPEC.md 1(d) identity: expl(pi*_tau) = tau [max log(pi*/mu) - KL(pi*||mu)]
    assert abs(expl_star - tau * (np.max(np.log(ps / MU)) - kl(ps, MU))) < 1e-12


# ------------------------------------------------------------------------------------ step-size limits
def test_omd_threshold_on_rps_just_below_converges_just_above_does_not():
    """SPEC.md 2/12(b): OMD-reg is stable on RPS iff eta < 2 tau/(tau^2 + 1/12) (= 2.143 at tau = 0.1)."""
    tau = 0.1
    thr = 2 * tau / (tau**2 + 1 / 12)
    ps = star("rps", tau)
    below = solve(rps_mu(), "omd", eta=0.9 * thr, tau=tau, steps=1000, init=PI0, record_every=100, target=ps)
    assert below.history.last("kl_target_last") < 1e-12
    for name in ("omd", "inpo"):
        above = solve(rps_mu(), name, eta=1.1 * thr, tau=tau, steps=2000, init=PI0, record_every=100, target=ps)
        assert above.history.last("kl_target_last") > 2e-3  # measured 3.6e-3: a limit cycle
    eg = solve(rps_mu(), "egpo", eta=1.1 * thr, tau=tau, steps=300, init=PI0, record_every=100, target=ps)
    assert eg.history.last("kl_target_last") < 1e-12


def test_large_step_small_tau_omd_cycles_while_egpo_converges():
    """SPEC.md 12(b): tau = 0.02, eta = 1: OMD-reg KL 0.55 after 2e4 steps, EGPO ~0."""
    tau = 0.02
    ps = star("rps", tau)
    omd = solve(rps_mu(), "omd", eta=1.0, tau=tau, steps=3000, init=PI0, record_every=100, target=ps)
    k = omd.history["kl_target_last"][-10:]
    assert (k > 0.4).all() and (k < 0.7).all()  # measured 0.48..0.53, oscillating
    eg = solve(rps_mu(), "egpo", eta=1.0, tau=tau, steps=400, init=PI0, record_every=100, target=ps)
    assert eg.history.last("kl_target_last") < 1e-12


def test_divergence_away_from_the_equilibrium_is_reported_in_the_result():
    tau = 0.02
    ps = star("rps", tau)
    near = ps * np.exp(1e-3 * np.array([1.0, -1.0, 0.5]))
    near /= near.sum()
    omd = solve(rps_mu(), "omd", eta=1.0, tau=tau, steps=2000, init=near, record_every=20, target=ps)
    assert omd.status == "diverged"
    assert omd.diverged_at is not None and 0 < omd.diverged_at <= 2000
    assert "stability limit" in omd.message
    assert omd.history.last("kl_target_last") > 0.1
    eg = solve(rps_mu(), "egpo", eta=1.0, tau=tau, steps=400, init=near, record_every=20, target=ps)
    assert eg.status == "ok" and eg.diverged_at is None


# ---------------------------------------------------------------------------------- unregularised game
def test_mwu_on_rps_matches_spec_12a_and_its_last_iterate_spirals_outward():
    """SPEC.md 12(a), pi0 = (0.6, 0.3, 0.1), T = 2e4: expl(last) at t = 100/1e3/2e4, expl(avg), min prob."""
    g = games.rock_paper_scissors()
    spec = {0.05: ((0.219, 0.281, 0.180), 2.8e-3, 6e-3), 0.3: ((0.156, 0.371, 0.499), 1.9e-3, 8e-14)}
    # exact (the reference loops'): expl(last) at t = 100/1e3/2e4, expl(avg), min prob at 2e4
    exact = {
        0.05: ((0.218620, 0.280628, 0.180270), 2.80995e-3, 5.95618e-3),
        0.3: ((0.155582, 0.370550, 0.499281), 1.90824e-3, 7.64018e-14),
    }
    for eta, (last, avg, min_prob) in spec.items():
        st, kls, hist, avgs = None, [], [], []
        for _ in range(4):  # 4 x 5000 steps, continuing from the state
            r = solve(g, "mwu", eta=eta, steps=5000, init=PI0, record_every=100, target=None, state=st)
            st = r.state
            kls.append(kl(np.full(3, 1 / 3), r.last))
            hist.append(r.history)
            avgs.append(r.average)  # the average of this segment's 5000 iterates
        at = {int(s): e for h in hist for s, e in zip(h["step"], h["expl_last"])}
        np.testing.assert_allclose([at[100], at[1000], at[20000]], last, atol=1.5e-3)
        assert np.all(np.diff(kls) > 0), kls  # KL(uniform NE || pi_t) grows: cycles outward
        assert np.exp(st.logp).min() == pytest.approx(min_prob, rel=0.5)
        # the average over all 2e4 iterates: the 4 segment averages weighted equally
        avg_pi = np.mean(avgs, axis=0)
        assert abs(float(np.max(g.P[0] @ avg_pi) - 0.5) - avg) < 2e-4  # measured 2.81e-3 / 1.91e-3
        ref, ref_avg = reference_trajectory("mwu", {"eta": eta}, g, PI0, 20_000, {100, 1000, 20_000})
        got = [at[100], at[1000], at[20000]]
        np.testing.assert_allclose(got, [expl_of(g, ref[t]) for t in (100, 1000, 20_000)], **EXACT)
        np.testing.assert_allclose(np.asarray(st.logp).ravel(), ref[20_000], rtol=0, atol=1e-10)  # log space
        np.testing.assert_allclose(avg_pi, ref_avg, rtol=0, atol=1e-13)
        np.testing.assert_allclose(got, exact[eta][0], rtol=1e-5)
        assert float(np.max(g.P[0] @ avg_pi) - 0.5) == pytest.approx(exact[eta][1], rel=1e-5)
        assert np.exp(st.logp).min() == pytest.approx(exact[eta][2], rel=1e-5)


@pytest.mark.parametrize("name", ["omwu", "egpo"])
def test_omwu_and_extragradient_last_iterate_converge_on_rps(name):
    """SPEC.md 12(a), tau = 0, eta = 0.3: expl(last) 0.189/0.188 at t = 100, 4.6e-3/4.7e-3 at 1e3, 1e-15 at 2e4."""
    spec = {"omwu": (0.189, 4.6e-3), "egpo": (0.188, 4.7e-3)}[name]
    exact = {"omwu": (0.188532, 4.64321e-3), "egpo": (0.187866, 4.65737e-3)}[name]  # the reference loops'
    r = solve(games.rock_paper_scissors(), name, eta=0.3, tau=0.0, steps=10_000, init=PI0, record_every=100,
              target=None)
    at = dict(zip(r.history["step"].astype(int), r.history["expl_last"]))
    assert abs(at[100] - spec[0]) < 1.5e-3
    assert abs(at[1000] - spec[1]) < 2e-4
    ref, _ = reference_trajectory(name, {"eta": 0.3, "tau": 0.0}, games.rock_paper_scissors(), PI0, 1000, {100, 1000})
    np.testing.assert_allclose([at[100], at[1000]], [expl_of(games.rock_paper_scissors(), ref[t]) for t in (100, 1000)],
                               **EXACT)
    np.testing.assert_allclose([at[100], at[1000]], exact, rtol=1e-5)
    assert at[10_000] < 1e-13  # measured 9e-16 (OMWU) / 1.2e-15 (EG) by t = 1e4
    assert r.last.min() > 0.333


@pytest.mark.parametrize("name", ["mwu", "sppo", "spo", "dno"])
def test_average_iterate_meets_the_hedge_regret_bound(name):
    """No-regret: with gains in [0, 1], expl(avg of pi_0..pi_{T-1}) <= ln(1/min pi0)/(eta T) + eta/8, and the
    driver's average (pi_1..pi_T) differs by at most 1/T.  eta = 1/sqrt(T) makes it O(1/sqrt T) (SPEC.md 2)."""
    g = games.rock_paper_scissors()
    expl = []
    for T in (500, 2000, 8000):
        eta = 1 / math.sqrt(T)
        r = solve(g, name, eta=eta, steps=T, init=PI0, record_every=T, target=None)
        e = r.history.last("expl_avg")
        assert e <= math.log(1 / PI0.min()) / (eta * T) + eta / 8 + 1 / T
        expl.append(e * math.sqrt(T))
        assert r.history.last("expl_last") > 0.05  # while the last iterate does not converge
    assert max(expl) < 2.5, expl  # expl_avg * sqrt(T) stays bounded (measured 1.2, 0.8, 1.8 for MWU)
