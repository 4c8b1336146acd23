"""Step-size schedules and the step-size conversions of SPEC.md section 0."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nashalign import games, schedules
from nashalign.algorithms import get_algorithm
from nashalign.algorithms.inpo import INPO
from nashalign.solve import exact_signal


def test_schedule_values():
    assert schedules.constant(0.3)(0) == schedules.constant(0.3)(10**6) == 0.3
    th = schedules.nash_md_theorem(0.1, 1000)
    assert th(0) == th(999) == pytest.approx(math.log(1000) / (0.1 * 1000), rel=1e-15)  # SPEC.md 3.1
    h = schedules.harmonic(1.0, 0.5)
    assert [h(t) for t in (0, 1, 3)] == pytest.approx([1 / 1.5, 1 / 2.0, 1 / 3.0], rel=1e-15)
    s = schedules.inverse_sqrt(0.4)
    assert [s(t) for t in (0, 3, 99)] == pytest.approx([0.4, 0.2, 0.04], rel=1e-15)
    assert schedules.as_schedule(0.2)(7) == 0.2 and schedules.as_schedule(s) is s


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: schedules.constant(0.0), "eta must be finite and > 0"),
        (lambda: schedules.nash_md_theorem(0.0, 100), "tau must be finite and > 0"),
        (lambda: schedules.nash_md_theorem(0.1, 1), "horizon must be >= 2"),
        (lambda: schedules.harmonic(-1.0, 0.1), "eta0 must be finite and > 0"),
        (lambda: schedules.inverse_sqrt(float("inf")), "eta0 must be finite and > 0"),
        (lambda: schedules.from_inverse_step(0.0), "eta_inv must be finite and > 0"),
        (lambda: schedules.from_mmd_step(-0.5, 0.1), "eta_M must be finite and > 0"),
    ],
)
def test_bad_schedule_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_from_inverse_step_is_inpo_paper_form():
    """SPEC.md 0/8: log pi' = r log mu + (1 - r) log pi + P pi / eta_inv + c, r = tau/eta_inv."""
    eta_inv, tau = 4.0, 0.5
    assert schedules.from_inverse_step(eta_inv) == 0.25
    g = games.random_game(5, num_contexts=2, seed=3, ref="random")
    alg = INPO.from_paper(eta_inv, tau)
    assert alg.eta == 0.25
    st = alg.init(g.log_ref[::-1].copy(), g.log_ref)
    got = alg.update(st, exact_signal(g.P, alg.opponents(st))).logp
    r = tau / eta_inv
    z = r * g.log_ref + (1 - r) * st.logp + np.einsum("cij,cj->ci", g.P, np.exp(st.logp)) / eta_inv
    z -= np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, z, atol=1e-14, rtol=0)


@pytest.mark.parametrize("eta_m,tau", [(0.5, 0.1), (3.0, 0.02), (10.0, 1.0)])
def test_mmd_step_equals_omd_step_with_converted_eta(eta_m, tau):
    """SPEC.md 0 and 12(e): (log pi + eta_M tau log mu + eta_M g)/(1 + eta_M tau) is the OMD-reg step with
    eta = eta_M/(1 + eta_M tau) (measured 9e-16)."""
    g = games.random_game(6, num_contexts=3, seed=4, ref="random")
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(6), size=3))
    gain = np.einsum("cij,cj->ci", g.P, np.exp(lp))
    z = (lp + eta_m * tau * g.log_ref + eta_m * gain) / (1 + eta_m * tau)
    mmd = z - np.log(np.exp(z).sum(-1, keepdims=True))
    eta = schedules.from_mmd_step(eta_m, tau)
    assert eta == pytest.approx(eta_m / (1 + eta_m * tau), rel=1e-15)
    alg = get_algorithm("omd", eta=eta, tau=tau)
    st = alg.init(lp, g.log_ref)
    got = alg.update(st, exact_signal(g.P, alg.opponents(st))).logp
    np.testing.assert_allclose(got, mmd, atol=1e-14, rtol=0)


def test_algorithm_evaluates_its_schedule_per_step():
    alg = get_algorithm("mwu", eta=schedules.inverse_sqrt(1.0))
    assert [alg.step_size(t) for t in (0, 3)] == [1.0, 0.5]
