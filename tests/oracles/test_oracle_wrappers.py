import math

import numpy as np
import pytest
import torch

from nashalign.oracles import (
    CachedOracle,
    MatrixOracle,
    OracleError,
    OracleReport,
    cached,
    check_oracle,
    counted,
    micro_batched,
    retrying,
    symmetrize,
    validated,
)

RNG = np.random.default_rng(0)
_A = RNG.uniform(-0.4, 0.4, size=(2, 5, 5))
P_TRUE = 0.5 + (_A - np.swapaxes(_A, -1, -2)) / 2  # entries in [0.1, 0.9]


def true_oracle():
    return MatrixOracle(P_TRUE)


def biased_oracle(bias=0.1):
    """p_biased(a, b) = clamp(p_true(a, b) + bias): a planted first-position bias."""
    base = true_oracle()

    def oracle(prompts, first, second):
        return (base(prompts, first, second) + bias).clamp(0.0, 1.0)

    return oracle


def all_pairs():
    c, i, j = np.meshgrid(np.arange(2), np.arange(5), np.arange(5), indexing="ij")
    return tuple(torch.from_numpy(a.ravel()) for a in (c, i, j))


def test_symmetrize_removes_a_planted_position_bias_exactly(assert_conforms):
    c, i, j = all_pairs()
    biased = biased_oracle(0.1)
    raw = biased(c, i, j)
    assert (raw + biased(c, j, i) - 1).abs().max().item() == pytest.approx(0.2)
    sym = symmetrize(counted(biased))
    p = assert_conforms(sym, c, i, j, atol=1e-12)
    torch.testing.assert_close(p, torch.from_numpy(P_TRUE[c, i, j]), atol=1e-7, rtol=0)
    # consistent to the last bit, and asked both orders in ONE call of 2B pairs
    sym.inner.reset()
    p = sym(c, i, j)
    assert (sym.inner.calls, sym.inner.queries) == (1, 2 * len(c))
    assert torch.equal(p + sym(c, j, i), torch.ones_like(p))
    assert torch.all(sym(c, i, i) == 0.5)


def test_symmetrize_float32_oracle_is_exactly_consistent():
    def judge(prompts, first, second):  # float32 with a position bias
        return torch.tensor([0.3 + 0.01 * len(a) - 0.002 * len(b) for a, b in zip(first, second)])

    sym = symmetrize(judge)
    first, second = ["a", "bbb", "cc"], ["dddd", "e", "cc"]
    p, q = sym(["x"] * 3, first, second), sym(["x"] * 3, second, first)
    assert torch.equal(p + q, torch.ones(3, dtype=torch.float64))
    assert p[2].item() == 0.5
    report = check_oracle(sym, ["x", "y"], ["a", "bbb", "cc", "dddd"], num_pairs=32)
    assert report.consistent(tol=0.0)


def test_cached_avoids_repeat_calls():
    inner = counted(true_oracle())
    oracle = cached(inner)
    c, i, j = torch.tensor([0, 1, 0, 0]), torch.tensor([1, 2, 1, 3]), torch.tensor([2, 3, 2, 4])
    p1 = oracle(c, i, j)
    assert (inner.calls, inner.queries) == (1, 3)  # the duplicate pair (0, 1, 2) is asked once
    assert (oracle.hits, oracle.misses) == (1, 3)
    p2 = oracle(c, i, j)
    assert (inner.calls, inner.queries) == (1, 3)  # nothing asked again
    assert torch.equal(p1, p2) and torch.equal(p1, true_oracle()(c, i, j))
    oracle(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 0]))  # one hit, one miss
    assert (inner.calls, inner.queries) == (2, 4)
    assert len(oracle) == 4
    # keys are the same whether ids come as tensors or lists
    oracle([0], [1], [2])
    assert inner.queries == 4
    oracle.cache_clear()
    oracle([0], [1], [2])
    assert inner.queries == 5


def test_cached_with_strings_and_lru_bound():
    calls = []

    def oracle(prompts, first, second):
        calls.append(list(zip(prompts, first, second)))
        return torch.full((len(prompts),), 0.25)

    lru = cached(oracle, maxsize=2)
    assert isinstance(lru, CachedOracle)
    out = lru(["x", "x", "x"], ["a", "b", "c"], ["b", "c", "a"])
    assert out.dtype == torch.float32 and out.tolist() == [0.25] * 3
    assert len(lru) == 2  # ("x", "a", "b") was evicted
    lru(["x"], ["c"], ["a"])
    assert len(calls) == 1
    lru(["x"], ["a"], ["b"])
    assert len(calls) == 2 and calls[-1] == [("x", "a", "b")]


def test_micro_batched_splits_and_matches():
    inner = counted(true_oracle())
    oracle = micro_batched(inner, 4)
    c, i, j = all_pairs()
    p = oracle(c, i, j)
    assert inner.calls == math.ceil(len(c) / 4) and inner.queries == len(c)
    assert torch.equal(p, true_oracle()(c, i, j))
    strs = micro_batched(lambda x, a, b: torch.tensor([len(s) / 10 for s in a]), 2)
    assert strs(["q"] * 5, ["a", "bb", "ccc", "dddd", "e"], ["z"] * 5).tolist() == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.1]
    )
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        micro_batched(inner, 0)


class Flaky:
    """Fails with ConnectionError ``failures`` times, then answers."""

    name = "flaky-remote-judge"

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def __call__(self, prompts, first, second):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"503 Service Unavailable (call {self.calls})")
        return torch.full((len(prompts),), 0.75)


def test_retrying_recovers_from_transient_failures_with_exponential_backoff():
    slept = []
    flaky = Flaky(failures=2)
    oracle = retrying(flaky, attempts=3, backoff=0.5, factor=2.0, sleep=slept.append)
    assert oracle(["x"], ["a"], ["b"]).tolist() == [0.75]
    assert flaky.calls == 3 and slept == [0.5, 1.0] and oracle.failures == 2


def test_retrying_gives_up_with_a_clear_error_on_permanent_failures():
    slept = []
    flaky = Flaky(failures=10**9)
    oracle = retrying(flaky, attempts=4, backoff=1.0, factor=3.0, max_backoff=5.0, sleep=slept.append)
    with pytest.raises(OracleError, match=r"'flaky-remote-judge' failed 4 times .*prompt='x'.*ConnectionError") as err:
        oracle(["x"], ["a"], ["b"])
    assert isinstance(err.value.__cause__, ConnectionError)
    assert flaky.calls == 4 and slept == [1.0, 3.0, 5.0]


def test_retrying_does_not_retry_other_exceptions():
    calls = []

    def broken(prompts, first, second):
        calls.append(1)
        raise KeyError("bug")

    oracle = retrying(broken, attempts=5, exceptions=(ConnectionError,), sleep=lambda s: None)
    with pytest.raises(KeyError):
        oracle(["x"], ["a"], ["b"])
    assert len(calls) == 1


def test_validated_names_the_oracle_and_inputs_on_nan():
    def nan_judge(prompts, first, second):
        return torch.tensor([0.5 if a != "boom" else float("nan") for a in first])

    oracle = validated(nan_judge, name="my-judge")
    assert oracle(["p"], ["fine"], ["ok"]).tolist() == [0.5]
    with pytest.raises(
        OracleError,
        match=r"'my-judge' returned 1 invalid value\(s\) of 2 \(1 NaN, 0 outside.*#1: prompt='q2', "
        r"first='boom', second='y' -> nan",
    ):
        oracle(["q1", "q2"], ["fine", "boom"], ["x", "y"])


def test_validated_rejects_out_of_range_and_wrong_shape():
    oracle = validated(lambda x, a, b: torch.tensor([0.2, 1.3, -0.1]))
    with pytest.raises(OracleError, match=r"2 invalid value\(s\) of 3 \(0 NaN, 2 outside \[0, 1\]\).*#1: prompt=2"):
        oracle(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]), torch.tensor([1, 1, 1]))
    wrong = validated(lambda x, a, b: torch.zeros(len(x), 2), name="wide")
    with pytest.raises(OracleError, match=r"'wide' returned shape \(2, 2\) for 2 pairs"):
        wrong(["a", "b"], ["c", "d"], ["e", "f"])


def test_check_oracle_reports_asymmetry_and_position_bias():
    report = check_oracle(biased_oracle(0.1), [0, 1], list(range(5)), num_pairs=50, seed=3)
    assert isinstance(report, OracleReport) and report.num_pairs == 50
    # P_TRUE + 0.1 never clamps above 1 here (max 0.9 + 0.1), so the bias is exactly +0.1 everywhere
    assert report.position_bias == pytest.approx(0.1, abs=1e-12)
    assert report.max_asymmetry == pytest.approx(0.2, abs=1e-12)
    assert report.max_self_deviation == pytest.approx(0.1, abs=1e-12)
    assert not report.consistent()
    assert "position bias +0.1" in str(report)
    clean = validated(true_oracle()).check(torch.tensor([0, 1]), torch.arange(5).repeat(2, 1), num_pairs=50)
    assert clean.consistent(tol=0.0) and clean.position_bias == 0.0
    with pytest.raises(OracleError, match="NaN"):
        check_oracle(lambda x, a, b: torch.full((len(x),), float("nan")), ["p"], ["a", "b"])
