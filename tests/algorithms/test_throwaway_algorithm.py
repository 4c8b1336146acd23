"""Adding an algorithm touches no file of the package: one defined and registered HERE, at runtime.

``ThrowawayMirror`` (OMD's rule under another name, with its own naive reference step below) is registered with
:func:`nashalign.algorithms.registry.register` and given ONE entry in ``cases.py``'s registry; then the same test
functions that guard every built-in algorithm run on it -- the contract (exact path, reference loops, closed form,
fixed point, checkpoints), the exactness proof (loss minimiser = exact step, every form x estimator), the sampled
mode -- and both Hydra apps build it from ``algorithm._target_=test_throwaway_algorithm.ThrowawayMirror``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cases
import numpy as np
import pytest

from nashalign.algorithms import ALGORITHMS
from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register

ROOT = Path(__file__).resolve().parents[2]
NAME = "throwaway_mirror"


@dataclass(frozen=True)
class ThrowawayMirror(MirrorAlgorithm):
    """``pi_{t+1} ∝ pi_t^{1-eta tau} mu^{eta tau} exp(eta P(. > pi_t))``, not registered on import."""

    name = NAME
    reference = "a test of tests/algorithms/cases.py"
    tau_rule = "positive"
    forms = ("regression", "logistic", "pg")
    estimator = "pair"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)


def _reference_step(hp: dict, P, logp, logmu, memory):
    """Naive one-context step, plain floats: log pi' = normalize((1-eta tau) log pi + eta tau log mu + eta P pi)."""
    eta, tau = hp["eta"], hp["tau"]
    n = len(logp)
    win = [sum(P[y][k] * math.exp(logp[k]) for k in range(n)) for y in range(n)]
    z = [(1 - eta * tau) * logp[y] + eta * tau * logmu[y] + eta * win[y] for y in range(n)]
    top = max(z)
    lse = top + math.log(sum(math.exp(v - top) for v in z))
    return [v - lse for v in z], memory


def _closed_form():  # rock-paper-scissors from PI0 with reference MU (test_contract.py), eta = 0.5, tau = 0.1
    import test_contract as tc

    p = tc.PI0
    q = p**0.95 * tc.MU**0.05 * np.exp(0.5 * tc.RPS_P @ p)
    return 1, q / q.sum()


CASE = cases.Case(
    contract={"eta": 0.5, "tau": 0.1},
    exact=[(0.5, 0.1), (2.0, 0.4)],
    sampled=(0.5, 0.1),
    reference=_reference_step,
    reference_memory=lambda logp: {},
    variants={"throwaway_mirror_strong": ({"eta": 2.0, "tau": 0.4}, "pi_star")},
    fixed_point="pi_star",
    closed_form={NAME: _closed_form},
)


@pytest.fixture
def registered(monkeypatch):
    """Register the class and its case, refresh the test modules' views of ``cases.CASES``; undone after."""
    sys.path.insert(0, str(ROOT / "tests"))  # test_sampled.py lives one folder up
    import test_contract
    import test_exactness
    import test_sampled

    register(ThrowawayMirror)
    monkeypatch.setitem(cases.CASES, NAME, CASE)
    try:
        monkeypatch.setattr(test_contract, "CASES", {c: (n, hp) for c, (n, hp, _) in cases.contract_cases().items()})
        monkeypatch.setattr(test_contract, "SETTINGS", {n: c.contract for n, c in cases.CASES.items()})
        monkeypatch.setattr(test_exactness, "SETTINGS", {n: c.exact for n, c in cases.CASES.items()})
        monkeypatch.setattr(test_exactness, "EXTRA", {n: c.exact_extra for n, c in cases.CASES.items()})
        monkeypatch.setattr(test_sampled, "SETTINGS", {n: c.sampled for n, c in cases.CASES.items()})
        monkeypatch.setattr(test_sampled, "EXTRA", {n: c.sampled_extra for n, c in cases.CASES.items()})
        yield test_contract, test_exactness, test_sampled
    finally:
        del ALGORITHMS[NAME]
        sys.path.remove(str(ROOT / "tests"))


def test_not_registered_on_import():
    assert NAME not in ALGORITHMS and NAME not in cases.CASES


def test_throwaway_algorithm_passes_the_contract(registered, tmp_path):
    tc, _, _ = registered
    tc.test_every_registered_algorithm_has_settings()
    for case in (NAME, "throwaway_mirror_strong"):
        tc.test_rows_are_distributions_after_every_phase(case)
        tc.test_batched_contexts_equal_separate_runs(case)
        tc.test_numpy_float64_equals_torch_float64(case)
        tc.test_regularised_equilibrium_is_a_fixed_point(case)
        tc.test_batched_step_equals_naive_reference_loops(case)  # its own reference step, from cases.py
        tc.test_state_round_trips_through_dict_numpy_and_torch(case)
        (tmp_path / case).mkdir()
        tc.test_checkpointed_run_resumed_from_file_equals_uninterrupted_run(case, tmp_path / case)
        tc.test_solve_continues_from_a_result_state_bit_identically(case)
    tc.test_rps_step_equals_closed_form_written_by_hand(NAME)
    for form in ThrowawayMirror.forms:
        for dtype in (tc.torch.float64, tc.torch.float32):
            tc.test_loss_is_finite_with_finite_gradient_on_extreme_and_minus_inf_inputs(NAME, form, dtype)


def test_throwaway_reference_step_has_teeth(registered):
    """The reference loop would catch a wrong step: with another eta it differs from the library's iterates."""
    tc, _, _ = registered
    with pytest.raises(AssertionError):
        case = cases.CASES[NAME]
        g = tc.rand_game()
        logp0 = tc.random_start(3, 5, seed=11)
        logp0 -= tc.logsumexp(logp0, axis=-1, keepdims=True)
        got = tc.iterate(tc.build(NAME), g.P, ThrowawayMirror(eta=0.5, tau=0.1).init(logp0, g.log_ref), 4)
        ref = tc.reference_steps.run_with(case.reference, case.reference_memory, {"eta": 0.4, "tau": 0.1},
                                          g.P.tolist(), logp0.tolist(), g.log_ref.tolist(), 4)
        np.testing.assert_allclose(got.logp, np.array(ref), atol=1e-12, rtol=0)


def test_throwaway_loss_minimiser_is_the_exact_step(registered):
    _, te, _ = registered
    te.test_every_registered_algorithm_is_covered()
    ids = [p.id for p in te._cases() if p.values[0] == NAME]
    assert len(ids) == 2 * 3 * 2  # 2 (eta, tau) x the exact forms regression, logistic, pg x 2 seeds
    for p in te._cases():
        if p.values[0] == NAME:
            te.test_loss_minimiser_equals_exact_step(*p.values)
    te.test_gradcheck_every_loss_form(NAME)
    te.test_loss_is_float32_under_bf16_and_finite_on_extreme_logprobs(NAME)
    pairs = [p for p in te._estimator_cases() if p.values[0] == NAME]
    assert len(pairs) == 3 * len(te.ESTIMATORS)
    for p in pairs:
        te.test_every_form_estimator_pair_is_exact_or_refused(*p.values)


def test_throwaway_sampled_mode_moves_toward_the_equilibrium(registered):
    _, _, ts = registered
    ts.test_settings_cover_the_registry()
    for game_name in sorted(ts.GAMES):
        ts.test_sampled_mode_moves_toward_the_equilibrium(NAME, game_name)


def _app(script: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "algorithms")])}
    cmd = [sys.executable, str(ROOT / script), "algorithm=omd", f"algorithm._target_={__name__}.ThrowawayMirror",
           "algorithm.eta=0.5", *overrides, f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=tmp_path.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_both_apps_run_the_throwaway_algorithm(tmp_path):
    import nashalign
    from nashalign.games import rock_paper_scissors

    _app("tabular/run.py", tmp_path / "tabular", "game=rps", "run.steps=30", "run.record_every=5")
    result = json.loads((tmp_path / "tabular" / "result.json").read_text())
    lib = nashalign.solve(rock_paper_scissors(ref=[0.7, 0.2, 0.1]), ThrowawayMirror(eta=0.5, tau=0.1), steps=30,
                          record_every=5)
    np.testing.assert_allclose(np.asarray(result["last"], dtype=float).ravel(), np.ravel(lib.last), atol=1e-12)
    _app("llm/train.py", tmp_path / "llm", "model.warmup_steps=20", "trainer.iterations=2",
         "trainer.prompts_per_iteration=2", "trainer.max_new_tokens=4", "trainer.epochs=1", "trainer.eval_every=1",
         "trainer.progress=false", "trainer.k=2", "trainer.opponent_samples=1")
    rows = [json.loads(line) for line in (tmp_path / "llm" / "metrics.jsonl").read_text().splitlines() if line]
    assert [r["iteration"] for r in rows if "loss" in r][-1] == 2 and rows[-1]["algorithm"] == NAME
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    summary = json.loads((tmp_path / "llm" / "summary.json").read_text())
    assert summary["algorithm"] == NAME and summary["iterations"] == 2 and summary["queries"] > 0
