"""The contract every registered algorithm passes (DESIGN.md 4.7), one parametrised suite over the registry.

1. rows are distributions; 2. batched over contexts = separate runs; 3. numpy float64 = torch float64;
4. the regularised equilibrium (cvxpy) is a fixed point of the rules whose fixed point is pi*_tau, and not
of Nash-MD with a constant step; 5. one step on rock-paper-scissors = a closed form written here by hand,
and the batched step = the naive loops of ``reference_steps.py``; 6. invalid hyperparameters raise
``ValueError``; 7. state round trips, checkpoint resume and ``state=`` continuation are bit-identical;
8. the torch loss is finite with a finite gradient on extreme and ``-inf`` inputs.
"""

from __future__ import annotations

import functools
import re

import cases
import numpy as np
import pytest
import reference_steps
import torch
from scipy.special import logsumexp

from nashalign import PreferenceGame, games, solve
from nashalign.algorithms import ALGORITHMS, LossInputs, State, _losses, get_algorithm
from nashalign.equilibrium import solve_regularized_nash
from nashalign.solve import exact_signal

#: Every contract case, ``{case id: (algorithm, hyperparameters)}``: one per algorithm (tau = 0 for the
#: unregularised rules) plus the variants that exercise other branches; all from ``cases.py``.
CASES = {cid: (name, hp) for cid, (name, hp, _) in cases.contract_cases().items()}
SETTINGS = {name: c.contract for name, c in cases.CASES.items()}


def _with_fixed_point(*kinds: str) -> list[str]:
    return sorted(cid for cid, (_, _, fp) in cases.contract_cases().items() if fp in kinds)


#: Rules whose fixed point is exactly pi*_tau (SPEC.md 1(d)).
PI_STAR_RULES = _with_fixed_point("pi_star")
UNREGULARISED = _with_fixed_point("ne")
#: Prox-point rules whose centres converge to the unregularised NE (the uniform NE of RPS is their fixed point).
PROX_TO_NE = _with_fixed_point("prox_ne")

# rock-paper-scissors of SPEC.md section 0 (eps = 1), start and reference of SPEC.md 12(a)/(b)
RPS_P = 0.5 + 0.5 * np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
PI0 = np.array([0.6, 0.3, 0.1])
MU = np.array([0.7, 0.2, 0.1])


def build(case: str):
    name, hp = CASES[case]
    return get_algorithm(name, **hp)


def iterate(alg, P, st: State, steps: int) -> State:
    for _ in range(steps):
        for ph in range(alg.phases):
            st = alg.update(st, exact_signal(P, alg.opponents(st, ph)), ph)
    return st


def random_start(C: int, n: int, seed: int = 3) -> np.ndarray:
    return np.log(np.random.default_rng(seed).dirichlet(np.ones(n), size=C))


@functools.cache
def rand_game(C: int = 3, n: int = 5, seed: int = 0) -> PreferenceGame:
    return games.random_game(n, num_contexts=C, seed=seed, ref="random")


def test_every_registered_algorithm_has_settings():
    assert set(SETTINGS) == set(ALGORITHMS)


# ---------------------------------------------------------------------------------------------- 1
@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_are_distributions_after_every_phase(case):
    alg = build(case)
    g = rand_game()
    logp0 = random_start(3, 5)
    logp0[1, 2] = -np.inf  # a zero-probability response must stay exactly zero, without NaN
    st = alg.init(logp0 - logsumexp(logp0, axis=-1, keepdims=True), g.log_ref)
    for _ in range(5):
        for ph in range(alg.phases):
            st = alg.update(st, exact_signal(g.P, alg.opponents(st, ph)), ph)
            for arr in [st.logp, *st.memory.values()]:
                assert not np.isnan(arr).any()
            np.testing.assert_allclose(logsumexp(st.logp, axis=-1), 0.0, atol=1e-12)
            assert (np.exp(st.logp) >= 0).all()
    assert st.t == 5
    assert np.exp(st.logp[1, 2]) == 0.0


# ---------------------------------------------------------------------------------------------- 2
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_contexts_equal_separate_runs(case):
    alg = build(case)
    g = rand_game()
    logp0 = random_start(3, 5)
    logp0 -= logsumexp(logp0, axis=-1, keepdims=True)
    batched = iterate(alg, g.P, alg.init(logp0, g.log_ref), 20)
    for c in range(3):
        alone = iterate(alg, g.P[c : c + 1], alg.init(logp0[c : c + 1], g.log_ref[c : c + 1]), 20)
        np.testing.assert_allclose(batched.logp[c : c + 1], alone.logp, atol=1e-12, rtol=0)
        for k, v in alone.memory.items():
            np.testing.assert_allclose(batched.memory[k][c : c + 1], v, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- 3
@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_float64_equals_torch_float64(case):
    alg = build(case)
    g = rand_game()
    logp0 = random_start(3, 5)
    logp0 -= logsumexp(logp0, axis=-1, keepdims=True)
    st_np = alg.init(logp0, g.log_ref)
    Pt = torch.as_tensor(g.P)
    st_t = alg.init(torch.as_tensor(logp0), torch.as_tensor(g.log_ref))
    for _ in range(8):  # several iterations, so OMWU's previous iterate and Nash-EMA's average matter
        for ph in range(alg.phases):  # and EGPO's half step is compared too
            st_np = alg.update(st_np, exact_signal(g.P, alg.opponents(st_np, ph)), ph)
            st_t = alg.update(st_t, exact_signal(Pt, alg.opponents(st_t, ph)), ph)
            assert isinstance(st_t.logp, torch.Tensor) and st_t.logp.dtype == torch.float64
            np.testing.assert_allclose(st_t.logp.numpy(), st_np.logp, atol=1e-10, rtol=0)
            assert st_t.memory.keys() == st_np.memory.keys()
            for k in st_np.memory:
                np.testing.assert_allclose(st_t.memory[k].numpy(), st_np.memory[k], atol=1e-10, rtol=0)


# ---------------------------------------------------------------------------------------------- 4
@functools.cache
def pi_star(tau: float) -> np.ndarray:
    return np.log(solve_regularized_nash(rand_game(), tau))  # (C, n), polished to ~1e-15


def _one_iteration_from(alg, logp) -> State:
    st = alg.init(logp, rand_game().log_ref)  # memory (previous iterate, EMA) starts at pi* too
    return iterate(alg, rand_game().P, st, 1)


@pytest.mark.parametrize("case", PI_STAR_RULES)
def test_regularised_equilibrium_is_a_fixed_point(case):
    alg = build(case)
    star = pi_star(alg.tau)
    nxt = _one_iteration_from(alg, star)
    np.testing.assert_allclose(nxt.logp, star, atol=1e-10, rtol=0)
    # ... and a generic point is not (the check has teeth)
    moved = _one_iteration_from(alg, random_start(3, 5) - logsumexp(random_start(3, 5), axis=-1, keepdims=True))
    assert np.abs(moved.logp - random_start(3, 5)).max() > 1e-3


@pytest.mark.parametrize("case", ["nash_md", "nash_md_mixture"])
def test_nash_md_with_constant_step_moves_off_the_regularised_equilibrium(case):
    """SPEC.md 1(d): its fixed point is BR_tau(mix(pi, mu)), O(eta)-biased away from pi*_tau."""
    alg = build(case)
    star = pi_star(alg.tau)
    nxt = _one_iteration_from(alg, star)
    assert np.abs(nxt.logp - star).max() > 1e-4


@pytest.mark.parametrize("case", UNREGULARISED + PROX_TO_NE)
def test_uniform_nash_equilibrium_of_rps_is_a_fixed_point(case):
    alg = build(case)
    g = games.rock_paper_scissors()
    uni = np.log(np.full((1, 3), 1 / 3))
    nxt = iterate(alg, g.P, alg.init(uni, g.log_ref), 3)
    np.testing.assert_allclose(nxt.logp, uni, atol=1e-14, rtol=0)
    off = iterate(alg, g.P, alg.init(np.log(PI0)[None], g.log_ref), 1)
    assert np.abs(off.logp - np.log(PI0)).max() > 1e-3


# ---------------------------------------------------------------------------------------------- 5
def _nrm(q):
    return q / q.sum()


def _omd(p, eta, tau, opp):  # pi^{1-eta tau} mu^{eta tau} exp(eta P opp), normalised
    return _nrm(p ** (1 - eta * tau) * MU ** (eta * tau) * np.exp(eta * RPS_P @ opp))


def _closed_form(case: str) -> tuple[int, np.ndarray]:
    """(iterations, expected pi) on RPS from PI0 with reference MU; SPEC.md 2, 3.1, 4, 5.1, 13 by hand.

    A case registered in ``cases.py`` with its own ``closed_form`` uses that one."""
    for c in cases.CASES.values():
        if case in c.closed_form:
            return c.closed_form[case]()
    p = PI0
    if case in ("mwu", "sppo", "spo", "dno"):  # eta = 0.3
        return 1, _nrm(p * np.exp(0.3 * RPS_P @ p))
    if case in ("omd", "inpo"):  # eta = 0.5, tau = 0.1
        return 1, _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p))
    if case == "nash_md":
        m = _nrm(p**0.95 * MU**0.05)
        return 1, _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ m))
    if case == "nash_md_mixture":
        m = _nrm(p**0.5 * MU**0.5)
        return 1, _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ m))
    if case == "egpo":
        half = _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p))
        return 1, _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ half))
    if case == "egpo_tau0":
        half = _nrm(p * np.exp(0.3 * RPS_P @ p))
        return 1, _nrm(p * np.exp(0.3 * RPS_P @ half))
    if case == "omwu":  # two steps: the first has pi_{-1} = pi_0
        p1 = _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p))
        return 2, _nrm(p1**0.95 * MU**0.05 * np.exp(0.5 * (2 * RPS_P @ p1 - RPS_P @ p)))
    if case == "omwu_tau0":
        p1 = _nrm(p * np.exp(0.3 * RPS_P @ p))
        return 2, _nrm(p1 * np.exp(0.3 * (2 * RPS_P @ p1 - RPS_P @ p)))
    if case == "nash_ema":  # beta = 0.3: opponent softmax(0.7 log pi_0 + 0.3 log pi_1) at the 2nd step
        p1 = _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p))
        q = _nrm(p**0.7 * p1**0.3)
        return 2, _nrm(p1**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ q))
    if case == "online_ipo":  # theta -= eta * 4 pi (e - E_pi e), e = log(pi/mu) - P pi / tau  (SPEC.md 4)
        e = np.log(p / MU) - RPS_P @ p / 0.1
        return 1, _nrm(p * np.exp(-0.05 * 4 * p * (e - p @ e)))
    if case in ("mpo", "comal", "comal_inpo", "nash_prox", "nash_prox_beta0", "onpo", "onpo_tau0"):
        return _closed_form_new(case)
    if case == "apo":  # the paper's form: proximal iterates hat, extrapolation (hat_{t+1}/hat_t)^alpha, alpha = 0.5
        p1 = h1 = _nrm(p * np.exp(0.3 * RPS_P @ p))  # zero initial velocity: pi_1 = hat_1
        h2 = _nrm(p1 * np.exp(0.3 * RPS_P @ p1))
        p2 = _nrm(h2**1.5 / h1**0.5)
        h3 = _nrm(p2 * np.exp(0.3 * RPS_P @ p2))
        return 3, _nrm(h3**1.5 / h2**0.5)
    if case == "mnpo":  # anchor mu^{eta tau} (pi_t^{1/2} pi_{t-1}^{1/2})^{1 - eta tau}, pi_{-1} = pi_0
        p1 = _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p))
        return 2, _nrm((p1**0.5 * p**0.5) ** 0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p1))
    if case == "rspo":  # forward-KL term eta tau_f mu/pi_t added to OMD's exponent
        return 1, _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * 0.05 * MU / p + 0.5 * RPS_P @ p))
    if case == "rspo_reverse_only":
        return 1, _nrm(p**0.95 * MU**0.05 * np.exp(0.5 * RPS_P @ p))
    if case == "xpo_alpha0":  # online IPO's argmin: mu exp(P(. > pi_t) / tau), tau = 0.5
        return 1, _nrm(MU * np.exp(RPS_P @ p / 0.5))
    raise KeyError(case)


def _ipo(p, c, tau, lr):  # one online-IPO gradient step toward the centre c (SPEC.md 4)
    e = np.log(p / c) - RPS_P @ p / tau
    return _nrm(p * np.exp(-lr * 4 * p * (e - p @ e)))


def _closed_form_new(case: str) -> tuple[int, np.ndarray]:
    """SPEC.md 14: 4 iterations with a centre reset after the 3rd (every = 3), or 2 optimistic iterations."""
    p, c = PI0, MU
    if case in ("onpo", "onpo_tau0"):  # pi_t from hat_{t-1} against pi_{t-1}; hat_t from hat_{t-1} against pi_t
        eta, tau = (0.5, 0.1) if case == "onpo" else (0.3, 0.0)
        hat, played = p, p
        for _ in range(2):
            played = _omd(hat, eta, tau, played)
            hat = _omd(hat, eta, tau, played)
        return 2, hat
    for t in range(1, 5):
        if case in ("mpo", "comal_inpo"):  # MMD = INPO's OMD step toward the magnet / centre c
            p = _nrm(p**0.95 * c**0.05 * np.exp(0.5 * RPS_P @ p))
        elif case == "comal":  # extragradient toward the centre c
            half = _nrm(p**0.95 * c**0.05 * np.exp(0.5 * RPS_P @ p))
            p = _nrm(p**0.95 * c**0.05 * np.exp(0.5 * RPS_P @ half))
        else:  # nash_prox: tau = 0.5, beta = 0.1 (or 0), lr 0.05
            p = _ipo(p, c, 0.5, 0.05)
        if t == 3:  # reset: c = p^(1-w) mu^w, w = beta/tau
            w = 0.2 if case == "nash_prox" else 0.0
            c = _nrm(p ** (1 - w) * MU**w)
    return 4, p


NO_CLOSED_FORM = ["xpo"]  # alpha > 0: a root of its stationarity condition, checked below


def test_xpo_step_solves_its_stationarity_condition_on_rps():
    """XPO (alpha > 0) has no closed form: its step satisfies 4 (v - E_pi_t v) + alpha (1 - pi/pi_t) = 0 with
    v = log pi - log mu - P(. > pi_t)/tau (up to a constant), and differs from the alpha = 0 closed form."""
    alg = build("xpo")
    st = iterate(alg, RPS_P[None], alg.init(np.log(PI0)[None], np.log(MU)[None]), 1)
    pi = np.exp(st.logp[0])
    v = np.log(pi) - np.log(MU) - RPS_P @ PI0 / 0.5
    f = 4 * (v - PI0 @ v) + 1e-3 * (1 - pi / PI0)
    np.testing.assert_allclose(f, 0.0, atol=1e-12)
    assert np.abs(pi - _nrm(MU * np.exp(RPS_P @ PI0 / 0.5))).max() > 1e-6  # the bonus moved it


def _has_closed_form(case: str) -> bool:
    try:
        _closed_form(case)
    except KeyError:
        return False
    return True


def test_every_built_in_case_but_xpo_has_a_hand_written_closed_form():
    """A new algorithm may bring a ``closed_form`` in ``cases.py``; the built-in rules all have one, but XPO."""
    built_in = {cid for cid, (name, _) in CASES.items()
                if getattr(cases.CASES[name].reference, "func", None) is reference_steps.step_one_context}
    assert len(built_in) >= 27
    assert {c for c in built_in if not _has_closed_form(c)} == set(NO_CLOSED_FORM)


@pytest.mark.parametrize("case", sorted(c for c in CASES if c not in NO_CLOSED_FORM and _has_closed_form(c)))
def test_rps_step_equals_closed_form_written_by_hand(case):
    alg = build(case)
    steps, expected = _closed_form(case)
    st = iterate(alg, RPS_P[None], alg.init(np.log(PI0)[None], np.log(MU)[None]), steps)
    np.testing.assert_allclose(np.exp(st.logp[0]), expected, atol=1e-14, rtol=0)
    assert np.abs(expected - PI0).max() > 1e-3  # the step does something


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_step_equals_naive_reference_loops(case):
    name, hp = CASES[case]
    alg = build(case)
    g = rand_game()
    logp0 = random_start(3, 5, seed=11)
    logp0 -= logsumexp(logp0, axis=-1, keepdims=True)
    got = iterate(alg, g.P, alg.init(logp0, g.log_ref), 4)
    case_ = cases.CASES[name]
    ref = reference_steps.run_with(case_.reference, case_.reference_memory, hp, g.P.tolist(), logp0.tolist(),
                                   g.log_ref.tolist(), 4)
    np.testing.assert_allclose(got.logp, np.array(ref), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- 6
KNOWN = ", ".join(sorted(ALGORITHMS))
INVALID = [
    ("omd", {"eta": 0.5, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("inpo", {"eta": 0.5, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("nash_md", {"eta": 0.5, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("online_ipo", {"eta": 0.5, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("omd", {"eta": 0.5, "tau": -0.1}, "tau must be finite and >= 0"),
    ("mwu", {"eta": 0.5, "tau": 0.1}, "is the unregularised rule: tau must be 0"),
    ("sppo", {"eta": 0.5, "tau": 0.1}, "is the unregularised rule: tau must be 0"),
    ("spo", {"eta": 0.5, "tau": 0.1}, "is the unregularised rule: tau must be 0"),
    ("dno", {"eta": 0.5, "tau": 0.1}, "is the unregularised rule: tau must be 0"),
    ("egpo", {"eta": 0.0, "tau": 0.1}, "eta must be finite and > 0"),
    ("mwu", {"eta": -1.0}, "eta must be finite and > 0"),
    ("omwu", {"eta": float("nan"), "tau": 0.1}, "eta must be finite and > 0"),
    ("omd", {"eta": 20.0, "tau": 0.1}, re.escape("eta * tau must be <= 1")),
    ("egpo", {"eta": 11.0, "tau": 0.1}, re.escape("eta * tau must be <= 1")),
    ("nash_md", {"eta": 0.5, "tau": 0.1, "form": "nope"}, "unknown loss form 'nope'"),
    ("mwu", {"eta": 0.5, "form": "sppo"}, "unknown loss form 'sppo'"),
    ("nash_md", {"eta": 0.5, "tau": 0.1, "mixture": 1.5}, re.escape("mixture must be in [0, 1]")),
    ("nash_ema", {"eta": 0.5, "tau": 0.1, "beta": 0.0}, re.escape("beta (the EMA rate) must be in (0, 1]")),
    ("mpo", {"eta": 0.5, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("comal", {"eta": 0.5, "tau": 0.1, "every": 0}, re.escape("every (iterations between centre resets) must be an integer >= 1")),
    ("mpo", {"eta": 0.5, "tau": 0.1, "every": 2.5}, re.escape("must be an integer >= 1, got 2.5")),
    ("nash_prox", {"eta": 0.05, "tau": 0.5, "beta": 0.7}, re.escape("beta (the target's KL strength toward mu) must be in [0, tau]")),
    ("nash_prox", {"eta": 0.05, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("onpo", {"eta": 11.0, "tau": 0.1}, re.escape("eta * tau must be <= 1")),
    ("comal", {"eta": 0.5, "tau": 0.1, "inner": "sgd"}, re.escape("comal: inner must be one of ['egpo', 'inpo'], got 'sgd'")),
    ("apo", {"eta": 0.3, "alpha": 1.0}, re.escape("alpha (the momentum) must be in [0, 1)")),
    ("apo", {"eta": 0.3, "tau": 0.1}, "is the unregularised rule: tau must be 0"),
    ("mnpo", {"eta": 0.5, "tau": 0.1, "lam": -0.1}, re.escape("lam (the weight of pi_(t-1) in the history) must be")),
    ("mnpo", {"eta": 0.5, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("rspo", {"eta": 0.5, "tau": 0.1, "tau_forward": -1.0}, "tau_forward must be finite and >= 0"),
    ("xpo", {"eta": 0.1, "tau": 0.0}, "needs a regularised game: tau must be > 0"),
    ("xpo", {"eta": 0.1, "tau": 0.5, "alpha": -1.0}, "alpha must be finite and >= 0"),
    ("not_an_algorithm", {"eta": 0.5}, re.escape(f"unknown algorithm 'not_an_algorithm'; known algorithms: {KNOWN}.")),
]


@pytest.mark.parametrize("name,hp,match", INVALID, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(INVALID)])
def test_invalid_hyperparameters_raise_value_error(name, hp, match):
    with pytest.raises(ValueError, match=match):
        get_algorithm(name, **hp)


def test_schedule_that_breaks_eta_tau_at_some_step_raises_at_that_step():
    alg = get_algorithm("omd", eta=lambda t: 0.5 if t < 3 else 20.0, tau=0.1)
    g = games.rock_paper_scissors()
    st = iterate(alg, g.P, alg.init(g.log_ref, g.log_ref), 3)
    with pytest.raises(ValueError, match=r"eta_3 = 20 with tau = 0.1: eta \* tau must be <= 1"):
        iterate(alg, g.P, st, 1)


def test_solve_rejects_eta_conflicting_with_an_algorithm_object():
    alg = get_algorithm("egpo", eta=0.5, tau=0.1)
    with pytest.raises(ValueError, match=re.escape("eta=0.2 conflicts with the algorithm object's eta=0.5")):
        solve(games.rock_paper_scissors(), alg, eta=0.2, steps=2)
    with pytest.raises(ValueError, match=re.escape("tau=0.3 conflicts with the algorithm object's tau=0.1")):
        solve(games.rock_paper_scissors(), alg, tau=0.3, steps=2)
    # the same values are not a conflict
    assert solve(games.rock_paper_scissors(), alg, eta=0.5, tau=0.1, steps=2, target=None).status == "ok"


def test_solve_by_name_without_eta_says_how_to_fix_it():
    with pytest.raises(ValueError, match=re.escape("needs a step size: pass eta=")):
        solve(games.rock_paper_scissors(), "mwu", steps=2)


# ---------------------------------------------------------------------------------------------- 7
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_round_trips_through_dict_numpy_and_torch(case):
    alg = build(case)
    g = rand_game()
    st = iterate(alg, g.P, alg.init(random_start(3, 5) - logsumexp(random_start(3, 5), -1, keepdims=True),
                                    g.log_ref), 3)
    d = st.to_dict()
    back = State.from_dict(d)
    assert back.t == st.t == 3
    np.testing.assert_array_equal(back.logp, st.logp)
    np.testing.assert_array_equal(back.logmu, st.logmu)
    assert back.memory.keys() == st.memory.keys()
    for k in st.memory:
        np.testing.assert_array_equal(back.memory[k], st.memory[k])
    as_torch = State.from_dict(d, like=torch.zeros(1, dtype=torch.float64))
    assert isinstance(as_torch.logp, torch.Tensor)
    np.testing.assert_array_equal(as_torch.logp.numpy(), st.logp)
    # continuing from the restored state is bit-identical
    np.testing.assert_array_equal(iterate(alg, g.P, back, 2).logp, iterate(alg, g.P, st, 2).logp)


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpointed_run_resumed_from_file_equals_uninterrupted_run(case, tmp_path):
    name, hp = CASES[case]
    g = rand_game(C=2, n=4, seed=5)
    kw = {"init": np.exp(random_start(2, 4) - logsumexp(random_start(2, 4), -1, keepdims=True)),
          "record_every": 10, "target": None}
    ckpt = tmp_path / "run.npz"
    first = solve(g, name, steps=100, checkpoint=ckpt, checkpoint_every=50, **hp, **kw)
    assert ckpt.exists() and first.state.t == 100
    resumed = solve(g, name, steps=200, checkpoint=ckpt, **hp, **kw)
    fresh = solve(g, name, steps=200, **hp, **kw)
    assert resumed.state.t == fresh.state.t == 200
    np.testing.assert_array_equal(resumed.last, fresh.last)
    np.testing.assert_array_equal(resumed.average, fresh.average)
    for col in ("step", "expl_last", "expl_avg", "reg_expl_last", "reg_expl_avg"):
        np.testing.assert_array_equal(resumed.history[col], fresh.history[col])


@pytest.mark.parametrize("case", sorted(CASES))
def test_solve_continues_from_a_result_state_bit_identically(case):
    name, hp = CASES[case]
    g = rand_game(C=2, n=4, seed=5)
    first = solve(g, name, steps=60, target=None, **hp)
    more = solve(g, name, steps=40, state=first.state, target=None, **hp)
    whole = solve(g, name, steps=100, target=None, **hp)
    assert more.state.t == 100
    np.testing.assert_array_equal(more.last, whole.last)
    for k in whole.state.memory:
        np.testing.assert_array_equal(more.state.memory[k], whole.state.memory[k])
    # the continuation's average is over its own 40 iterates, so 60*avg1 + 40*avg2 = 100*avg
    np.testing.assert_allclose(60 * first.average + 40 * more.average, 100 * whole.average, atol=1e-12)


# ---------------------------------------------------------------------------------------------- 8
def _loss_cases():
    for name in sorted(ALGORITHMS):
        forms = ALGORITHMS[name].forms if ALGORITHMS[name].lift != "gradient_step" else (None,)
        for form in forms:
            yield pytest.param(name, form, id=f"{name}-{form}")


@pytest.mark.parametrize("name,form", list(_loss_cases()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loss_is_finite_with_finite_gradient_on_extreme_and_minus_inf_inputs(name, form, dtype):
    hp = dict(SETTINGS[name])
    hp.pop("beta", None)
    alg = get_algorithm(name, **hp, **({"form": form} if form else {}))
    prev = torch.tensor([[-2e4, -1.2, -3e3], [float("-inf"), -0.9, -1.1], [-0.4, -1.1, -2.5]], dtype=dtype)
    K = 2 if (form is None or form in _losses.PAIR_FORMS) else 3
    inf = float("inf")
    # row 0: extreme but finite log-probs (long sequences); row 1: a response pi_t gives probability 0
    # (exact enumeration: anchor/behaviour -inf, weight 0); row 2: ordinary values
    logp = torch.tensor([[-1e4, -5e3, -2e4], [-1e4, -0.5, -1.0], [-0.2, -2.0, -3.0]], dtype=dtype)[:, :K]
    anchor = torch.tensor([[-2e4, -1.0, -3e3], [-inf, -0.7, -1.0], [-0.3, -1.0, -2.0]], dtype=dtype)[:, :K]
    ref = torch.tensor([[-1e4, -1e4, -50.0], [-1.0, -0.7, -1.0], [-0.3, -1.2, -2.0]], dtype=dtype)[:, :K]
    signal = torch.tensor([[1.0, 0.0, 0.5], [0.3, 0.9, 0.1], [0.6, 0.2, 0.7]], dtype=dtype)[:, :K]
    weights = torch.tensor([0.5, 0.0, 0.5], dtype=dtype)
    lp = logp.clone().requires_grad_(True)
    prev = prev[:, :K] if alg.uses_previous else None
    out = alg.loss(LossInputs(lp, anchor, ref, signal, weights, anchor, 0, prev))
    out.loss.backward()
    assert torch.isfinite(out.loss), out.loss
    assert torch.isfinite(lp.grad).all(), lp.grad
    assert (lp.grad[1] == 0).all()  # a weight-0 row contributes nothing
    for v in out.terms.values():
        assert torch.isfinite(v).all()
    # dropping the weight-0 row gives the same loss (it is really ignored, not just finite)
    keep = torch.tensor([0, 2])
    ref_out = alg.loss(LossInputs(logp[keep], anchor[keep], ref[keep], signal[keep], weights[keep], anchor[keep], 0,
                                  None if prev is None else prev[keep]))
    torch.testing.assert_close(out.loss.detach(), ref_out.loss)
