"""The persistent sqlite preference cache (any oracle, any number of processes) and the served oracle's offline
parts (argument checks, Retry-After parsing, identity); the live-server tests are in test_served.py."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nashalign.oracles import (
    OracleError,
    PreferenceStore,
    ServedJudgeOracle,
    build_oracle,
    counted,
    disk_cached,
    from_callable,
    oracle_identity,
    symmetrize,
    validated,
)
from nashalign.oracles.served import parse_retry_after

ROOT = Path(__file__).resolve().parents[2]


def _biased(prompts, first, second):
    """A position-biased oracle on ints: P = 0.6 + (a - b) / 100 (first position favoured)."""
    return torch.tensor([0.6 + (a - b) / 100 for a, b in zip(first, second)], dtype=torch.float64)


def test_answers_persist_across_instances_and_only_misses_are_asked(tmp_path):
    inner = counted(from_callable(_biased))
    db = tmp_path / "c.sqlite"
    cache = disk_cached(inner, db, identity="biased-v1")
    x, a, b = [0, 0, 1, 1], [1, 2, 3, 1], [2, 1, 1, 2]
    first = cache(x, a, b)
    torch.testing.assert_close(first, _biased(x, a, b))
    assert inner.queries == 4 and len(cache) == 4
    again = disk_cached(inner, db, identity="biased-v1")  # a new run on the same file
    out = again(x + [2, 0], a + [5, 1], b + [6, 1])  # two new pairs, one repeated in the call
    assert inner.queries == 4 + 1 + 0 + 1 and again.hits == 4 and again.misses == 2
    torch.testing.assert_close(out[:4], first)
    other = disk_cached(inner, db, identity="another judge")  # a different identity shares nothing
    other(x, a, b)
    assert inner.queries == 10 and PreferenceStore(db).count() == 4 + 2 + 4


def test_identity_keeps_answer_changing_wrappers_and_skips_neutral_ones():
    f = from_callable(_biased, name="biased")
    assert oracle_identity(validated(counted(f))) == oracle_identity(f)
    assert oracle_identity(symmetrize(f)) == f"SymmetrizedOracle({oracle_identity(f)})"
    s1 = ServedJudgeOracle("http://127.0.0.1:1/v1", "m")
    s2 = ServedJudgeOracle("http://127.0.0.1:1/v1", "m", template="Q {prompt} A {first} B {second}")
    s3 = ServedJudgeOracle("http://127.0.0.1:1/v1", "m", max_concurrency=3, timeout=5.0)  # not answer-changing
    assert s1.identity() != s2.identity() and s1.identity() == s3.identity()
    assert oracle_identity(symmetrize(s1)) == f"SymmetrizedOracle({s1.identity()})"


def test_symmetrized_answers_are_cached_exactly(tmp_path):
    cache = disk_cached(symmetrize(from_callable(_biased)), tmp_path / "s.sqlite")
    p = cache([0, 0], [1, 2], [2, 1])
    assert p.tolist() == pytest.approx([0.49, 0.51], abs=1e-15) and float(p.sum()) == 1.0
    assert torch.equal(cache([0, 0], [1, 2], [2, 1]), p) and cache.hits == 2


def test_a_failing_chunk_stores_nothing_and_earlier_chunks_stay(tmp_path):
    calls = []

    def flaky(prompts, first, second):
        calls.append(len(first))
        if len(calls) == 3:
            raise RuntimeError("server went away")
        return _biased(prompts, first, second)

    cache = disk_cached(flaky, tmp_path / "f.sqlite", identity="flaky", commit_every=2)
    with pytest.raises(RuntimeError, match="went away"):
        cache([0] * 6, [1, 2, 3, 4, 5, 6], [0] * 6)
    assert len(cache) == 4  # the two finished chunks were committed
    out = cache([0] * 6, [1, 2, 3, 4, 5, 6], [0] * 6)
    assert calls == [2, 2, 2, 2] and len(cache) == 6  # the rerun asked only the missing chunk
    torch.testing.assert_close(out, _biased(None, [1, 2, 3, 4, 5, 6], [0] * 6))


WRITER = """
import sys, torch
from nashalign.oracles import disk_cached
db, wid = sys.argv[1], int(sys.argv[2])
f = lambda x, a, b: torch.tensor([0.001 * (p + 7 * q) for p, q in zip(a, b)], dtype=torch.float64)
cache = disk_cached(f, db, identity="shared", commit_every=1)
for r in range(60):
    i = (r * 7 + wid * 13) % 100          # overlapping keys across writers
    out = cache([0], [i], [i + 1])
    assert abs(float(out[0]) - 0.001 * (i + 7 * (i + 1))) < 1e-12, out
"""


def test_concurrent_writer_processes_share_one_file(tmp_path):
    script, db = tmp_path / "w.py", tmp_path / "shared.sqlite"
    script.write_text(WRITER)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, str(script), str(db), str(w)], env=env, stderr=subprocess.PIPE)
             for w in range(4)]  # fmt: skip
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    expected = {(r * 7 + w * 13) % 100 for w in range(4) for r in range(60)}
    store = PreferenceStore(db)
    assert store.count("shared") == len(expected)
    mode = store._connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_store_pickles_and_build_oracle_option(tmp_path):
    db = tmp_path / "b.sqlite"
    o = build_oracle(_biased, symmetrize=True, cache_path=str(db), cache_identity="biased", count=True)
    p = o([0], [1], [2])
    assert type(o).__name__ == "DiskCachedOracle" and o.identity() == "biased"
    clone = pickle.loads(pickle.dumps(o.store))
    assert clone.count("biased") == 1 and float(p[0]) == pytest.approx(0.5 + (1 - 2) / 100)
    with pytest.raises(TypeError, match="identity"):
        disk_cached(_biased, db, identity="")
    with pytest.raises(ValueError, match="commit_every"):
        disk_cached(_biased, db, commit_every=0)


def test_served_argument_errors_and_retry_after():
    with pytest.raises(ValueError, match="base_url"):
        ServedJudgeOracle("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="mode"):
        ServedJudgeOracle("http://h/v1", "m", mode="vote")
    with pytest.raises(ValueError, match="template must contain"):
        ServedJudgeOracle("http://h/v1", "m", template="{prompt} {first}")
    with pytest.raises(ValueError, match="api_key_env must be the NAME"):
        ServedJudgeOracle("http://h/v1", "m", api_key_env="sk-abc 123")
    with pytest.raises(ValueError, match="max_concurrency"):
        ServedJudgeOracle("http://h/v1", "m", max_concurrency=0)
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def test_unreachable_server_gives_a_clear_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = ServedJudgeOracle(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01)
    with pytest.raises(OracleError, match=rf"127\.0\.0\.1:{port}.*query #0.*connection failed"):
        judge(["q"], ["a"], ["b"])
    assert judge.requests == 2 and judge.retries == 1


def test_served_config_composes_symmetrized_with_the_disk_cache(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = ["oracle.oracle.base_url=http://127.0.0.1:9/v1", "oracle.oracle.model=judge",
                 "oracle.oracle.api_key_env=MY_JUDGE_KEY", f"oracle.wrappers.cache_path={tmp_path / 'p.sqlite'}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="oracle/served", overrides=overrides)
    oracle = instantiate(cfg.oracle)
    judge = oracle.unwrap()
    assert type(oracle).__name__ == "DiskCachedOracle" and isinstance(judge, ServedJudgeOracle)
    assert oracle.identity() == f"SymmetrizedOracle({judge.identity()})"
    assert judge.api_key_env == "MY_JUDGE_KEY" and judge.template.startswith("Which response")


def test_rate_limit_spaces_request_starts():
    import asyncio

    from nashalign.oracles.served import _CallState

    async def starts(rate: float, n: int) -> list[float]:
        state = _CallState(None, asyncio.Semaphore(n), [], [])
        loop = asyncio.get_running_loop()
        out: list[float] = []

        async def one() -> None:
            await state.throttle(rate)
            out.append(loop.time())

        await asyncio.gather(*[one() for _ in range(n)])
        return sorted(out)

    t = asyncio.run(starts(50.0, 10))
    assert all(t[k] - t[0] >= k / 50.0 - 2e-3 for k in range(10))  # the k-th start waits k / rate seconds
