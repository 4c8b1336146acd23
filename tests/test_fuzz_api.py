"""Property-based fuzz of the public tabular API (issue 12): games, solve, metrics, equilibria, oracles, wrappers,
schedules and the sampled mode.  Whatever malformed value an argument gets, the call either works or raises
``ValueError``/``TypeError`` (``OracleError``, a ``ValueError``, for oracle answers) whose message names the
argument; any other exception (AttributeError, RuntimeError, IndexError, a warning under
``filterwarnings = error``, ...) fails the test.

Deterministic (``derandomize=True``, no example database) and small, so CI sees the same examples every run.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nashalign as na
from nashalign import games, schedules
from nashalign.oracles import (
    MatrixOracle,
    OracleError,
    cached,
    check_oracle,
    counted,
    micro_batched,
    retrying,
    symmetrize,
    validated,
)

FUZZ = settings(
    # NASHALIGN_FUZZ_EXAMPLES=500 for a deeper local run; CI keeps 40 per property, always the same ones
    max_examples=int(os.environ.get("NASHALIGN_FUZZ_EXAMPLES", "40")),
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------- junk values
_DTYPES = [np.float64, np.float32, np.int64, np.bool_, np.complex128]
_arrays = st.sampled_from(_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
)
_tensors = _arrays.filter(lambda a: a.dtype != np.complex128 or a.size < 20).map(lambda a: torch.from_numpy(a.copy()))
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2), st.complex_numbers(max_magnitude=2), st.text(max_size=3),
)
JUNK = st.one_of(
    _scalars,
    st.lists(st.one_of(st.floats(-2, 2), st.just(math.nan)), max_size=5),
    st.lists(st.lists(st.floats(-1, 2), max_size=3), max_size=3),  # ragged or not
    st.lists(_scalars, max_size=3),
    _arrays,
    _tensors,
    st.sampled_from([object(), {}, {"a": 1}, (), [[]], np.float32, torch.float32, "auto", "numpy", "torch"]),
    st.just(lambda *a, **k: "x"),
)


#: Counts whose valid-but-huge values (steps=1e15) would ask for a run that long: the fuzz keeps them small.
_COUNTS = {"steps", "max_outer", "inner_steps", "batch", "num_pairs", "attempts", "batch_size", "maxsize", "n",
           "num_contexts", "horizon", "check_every", "record_every", "checkpoint_every", "k"}


def small(arg: str, value: Any) -> bool:
    """False for a count argument given a huge number (a legitimate, very long request, not malformed input)."""
    if arg not in _COUNTS or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return True
    return not (math.isfinite(float(value)) and abs(float(value)) > 64)


def check(call: Callable[[], Any], *names: str) -> None:
    """Run ``call``; an exception must be ValueError/TypeError naming one of ``names`` (OracleError: the oracle)."""
    try:
        call()
    except OracleError as err:
        assert "racle" in str(err), err
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert any(n in msg for n in names), f"{type(err).__name__} does not name {names}: {msg}"


def rps() -> na.PreferenceGame:
    return games.rock_paper_scissors(ref=[0.6, 0.3, 0.1])


# ----------------------------------------------------------------------------- games
@FUZZ
@given(P=JUNK, ref=JUNK)
def test_fuzz_preference_game(P, ref):
    check(lambda: na.PreferenceGame(P), "P")
    check(lambda: na.PreferenceGame(rps().P, ref=ref), "ref")


@FUZZ
@given(P=hnp.arrays(np.float64, st.sampled_from([(3, 3), (2, 3, 3), (1, 1)]), elements=st.floats(-0.5, 1.5)))
def test_fuzz_nearly_valid_preference_matrices(P):
    check(lambda: na.PreferenceGame(P), "P")
    check(lambda: na.PreferenceGame(torch.from_numpy(P).float()), "P")


_CONSTRUCTORS = {
    "rock_paper_scissors": (games.rock_paper_scissors, {"eps": 1.0, "ref": None}),
    "cyclic": (games.cyclic, {"n": 4, "eps": 1.0, "ref": None}),
    "bradley_terry": (games.bradley_terry, {"rewards": [1.0, 0.0, -1.0], "beta": 1.0, "ref": None}),
    "population": (games.population, {"rewards": [[1.0, 0.0], [0.0, 1.0]], "weights": None, "beta": 1.0}),
    "condorcet": (games.condorcet, {"strength": 5.0, "ref": None}),
    "gpm": (games.gpm, {"embeddings": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "eigenvalues": None, "beta": 1.0}),
    "random_game": (games.random_game, {"n": 3, "num_contexts": None, "seed": 0, "ref": None}),
}


@FUZZ
@given(which=st.sampled_from(sorted(_CONSTRUCTORS)), data=st.data())
def test_fuzz_game_constructors(which, data):
    fn, kwargs = _CONSTRUCTORS[which]
    arg = data.draw(st.sampled_from(sorted(kwargs)))
    value = data.draw(JUNK)
    assume(small(arg, value))
    check(lambda: fn(**{**kwargs, arg: value}), arg)


# ----------------------------------------------------------------------------- solve
_SOLVE_ARGS = ["eta", "tau", "steps", "ref", "init", "backend", "dtype", "p_dtype", "device", "record_every", "seed",
               "target", "tol", "mode", "context_block", "checkpoint_every", "state", "algorithm", "game"]


@FUZZ
@given(arg=st.sampled_from(_SOLVE_ARGS), value=JUNK, name=st.sampled_from(["egpo", "mwu", "nash_md", "omd"]))
def test_fuzz_solve_exact(arg, value, name):
    assume(small(arg, value))
    kw: dict[str, Any] = {"eta": 0.3, "tau": 0.0 if name == "mwu" else 0.1, "steps": 3}
    game, alg = rps(), name
    if arg == "game":
        game = value
    elif arg == "algorithm":
        alg = value
    else:
        kw[arg] = value
    names = {"algorithm": ("algorithm",), "game": ("game",), "p_dtype": ("p_dtype", "dtype")}.get(arg, (arg,))
    if arg == "eta" and callable(value):
        names = ("eta", "schedule")
    check(lambda: na.solve(game, alg, **kw), *names)


@FUZZ
@given(arg=st.sampled_from(["form", "mixture", "beta", "max_log_ratio"]), value=JUNK)
def test_fuzz_algorithm_hyperparameters(arg, value):
    name = "nash_ema" if arg == "beta" else ("nash_md" if arg == "mixture" else "omd")
    check(lambda: na.solve(rps(), name, eta=0.3, tau=0.1, steps=2, **{arg: value}), arg)


@FUZZ
@given(value=JUNK)
def test_fuzz_schedule_values(value):
    check(lambda: na.solve(rps(), "mwu", eta=lambda t: value, steps=2), "eta", "schedule")


_SCHEDULES = {
    "constant": (schedules.constant, ("eta",)),
    "inverse_sqrt": (schedules.inverse_sqrt, ("eta0",)),
    "harmonic": (schedules.harmonic, ("eta0", "tau")),
    "nash_md_theorem": (schedules.nash_md_theorem, ("tau", "horizon")),
    "from_inverse_step": (schedules.from_inverse_step, ("eta_inv",)),
    "from_mmd_step": (schedules.from_mmd_step, ("eta_M", "tau")),
}


@FUZZ
@given(which=st.sampled_from(sorted(_SCHEDULES)), data=st.data())
def test_fuzz_schedule_constructors(which, data):
    fn, names = _SCHEDULES[which]
    args = [data.draw(st.one_of(JUNK, st.floats(0.01, 5))) for _ in names]
    assume(all(small(n, a) for n, a in zip(names, args)))
    check(lambda: fn(*args), *names)


# ----------------------------------------------------------------------------- sampled mode
_SAMPLED_ARGS = ["batch", "inner_steps", "optimizer", "lr", "estimator", "oracle", "seed"]


@FUZZ
@given(arg=st.sampled_from(_SAMPLED_ARGS), value=JUNK, name=st.sampled_from(["egpo", "sppo", "inpo"]))
def test_fuzz_solve_sampled(arg, value, name):
    assume(small(arg, value))
    kw: dict[str, Any] = {"eta": 0.3, "tau": 0.0 if name == "sppo" else 0.1, "steps": 2, "mode": "sampled",
                          "batch": 4, "inner_steps": 1, arg: value}
    names = ("oracle", "racle") if arg == "oracle" else (arg,)
    check(lambda: na.solve(rps(), name, **kw), *names)


@FUZZ
@given(answer=JUNK, name=st.sampled_from(["egpo", "sppo", "inpo"]))
def test_fuzz_oracle_answers_in_sampled_mode(answer, name):
    """Whatever an oracle returns (any shape, dtype, NaN, a string ...), the run stops with an OracleError."""

    def oracle(prompts, first, second):
        return answer

    tau = 0.0 if name == "sppo" else 0.1
    check(lambda: na.solve(rps(), name, eta=0.3, tau=tau, steps=2, mode="sampled", batch=4, inner_steps=1,
                           oracle=oracle), "oracle")


# ----------------------------------------------------------------------------- metrics and equilibria
_METRICS = {
    "exploitability": (na.exploitability, ("game", "policy", "tau", "ref")),
    "duality_gap": (na.duality_gap, ("game", "policy", "opponent", "tau", "ref")),
    "kl_divergence": (na.kl_divergence, ("game", "p", "q")),
    "win_rate": (na.win_rate, ("game", "policy", "opponent")),
}


@FUZZ
@given(which=st.sampled_from(sorted(_METRICS)), data=st.data())
def test_fuzz_metrics(which, data):
    fn, params = _METRICS[which]
    valid = {"game": rps(), "policy": [0.5, 0.3, 0.2], "opponent": [0.2, 0.3, 0.5], "tau": 0.1, "ref": None,
             "p": [0.5, 0.3, 0.2], "q": [1 / 3] * 3}
    arg = data.draw(st.sampled_from(params))
    kw = {p: valid[p] for p in params}
    kw[arg] = data.draw(JUNK)
    names = ("game", "P") if arg == "game" else (arg,)
    check(lambda: fn(**kw), *names)


@settings(FUZZ, max_examples=25)
@given(arg=st.sampled_from(["game", "tau", "ref", "tol", "solver"]), value=JUNK)
def test_fuzz_equilibria(arg, value):
    from nashalign.equilibrium import solve_nash, solve_regularized_nash

    names = ("game", "P") if arg == "game" else (arg,)
    if arg in ("game", "tol", "solver"):
        kw = {"tol": 1e-7, "solver": None, arg: value} if arg != "game" else {}
        check(lambda: solve_nash(value if arg == "game" else rps(), **kw), *names)
    if arg in ("game", "tau", "ref"):
        kw = {"tau": 0.1, "ref": None}
        if arg != "game":
            kw[arg] = value
        check(lambda: solve_regularized_nash(value if arg == "game" else rps(), **kw), *names)


@settings(FUZZ, max_examples=25)
@given(arg=st.sampled_from(["tau", "eta", "inner_steps", "max_outer", "tol", "check_every", "backend"]), value=JUNK)
def test_fuzz_solve_minimax(arg, value):
    assume(small(arg, value))
    from nashalign.prox import solve_minimax

    check(lambda: solve_minimax(rps(), **{"max_outer": 3, arg: value}), arg)


# ----------------------------------------------------------------------------- oracles and wrappers
@FUZZ
@given(arg=st.sampled_from(["game", "bernoulli", "seed"]), value=JUNK)
def test_fuzz_matrix_oracle_construction(arg, value):
    kw = {"bernoulli": False, "seed": 0}
    game: Any = rps()
    if arg == "game":
        game = value
    else:
        kw[arg] = value
    check(lambda: MatrixOracle(game, **kw), arg, "game", "P")


@FUZZ
@given(which=st.sampled_from(["prompts", "first", "second"]), value=JUNK)
def test_fuzz_matrix_oracle_queries(which, value):
    oracle = MatrixOracle(games.random_game(3, num_contexts=2, seed=0))
    q = {"prompts": torch.tensor([0, 1]), "first": torch.tensor([0, 2]), "second": torch.tensor([1, 1])}
    q[which] = value
    check(lambda: oracle(q["prompts"], q["first"], q["second"]), which, "prompts", "first", "second")


_WRAPPERS = {
    "cached": (lambda o, v: cached(o, maxsize=v), "maxsize"),
    "micro_batched": (lambda o, v: micro_batched(o, v), "batch_size"),
    "retrying.attempts": (lambda o, v: retrying(o, attempts=v, sleep=lambda s: None), "attempts"),
    "retrying.backoff": (lambda o, v: retrying(o, backoff=v, sleep=lambda s: None), "backoff"),
    "symmetrize": (lambda o, v: symmetrize(v), "oracle"),
    "validated": (lambda o, v: validated(v), "oracle"),
    "counted": (lambda o, v: counted(v), "oracle"),
}


@FUZZ
@given(which=st.sampled_from(sorted(_WRAPPERS)), value=JUNK)
def test_fuzz_wrappers(which, value):
    make, name = _WRAPPERS[which]
    assume(small(name, value))
    base = MatrixOracle(rps())

    def build_and_ask():
        wrapped = make(base, value)
        wrapped(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([1, 2]))

    check(build_and_ask, name)


@FUZZ
@given(arg=st.sampled_from(["prompts", "responses", "num_pairs", "seed"]), value=JUNK)
def test_fuzz_check_oracle(arg, value):
    assume(small(arg, value))
    kw: dict[str, Any] = {"prompts": [0], "responses": [0, 1, 2], "num_pairs": 4, "seed": 0}
    kw[arg] = value
    check(lambda: check_oracle(MatrixOracle(rps()), **kw), arg, "prompt", "response", "candidate")


def test_fuzz_suite_catches_what_it_claims():
    """The checker itself: an AttributeError or an unnamed ValueError fails it."""

    def attr():
        raise AttributeError("boom")

    with pytest.raises(AttributeError):
        check(attr, "x")
    with pytest.raises(AssertionError, match="does not name"):
        check(lambda: math.sqrt(-1), "steps")


@FUZZ
@given(which=st.sampled_from(["symmetrize", "cached", "micro_batched", "counted", "validated", "retrying"]),
       answer=JUNK)
def test_fuzz_wrappers_around_an_oracle_that_answers_junk(which, answer):
    """A wrapper passes a malformed answer on as an OracleError (or a valid tensor), never a deeper failure."""

    def junk_oracle(prompts, first, second):
        return answer

    make = {"symmetrize": symmetrize, "cached": cached, "micro_batched": lambda o: micro_batched(o, 2),
            "counted": counted, "validated": validated,
            "retrying": lambda o: retrying(o, attempts=2, sleep=lambda s: None)}[which]
    q = (torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]))
    check(lambda: make(junk_oracle)(*q), "oracle")
