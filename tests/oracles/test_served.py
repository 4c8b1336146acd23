"""ServedJudgeOracle against a REAL vLLM server on 127.0.0.1 (session fixture ``vllm_server``), with faults injected
by a local proxy, the persistent cache under a real kill, and API keys kept out of every dump."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nashalign.oracles import (
    LLMJudgeOracle,
    OracleError,
    PreferenceStore,
    ServedJudgeOracle,
    disk_cached,
    oracle_identity,
    symmetrize,
)
from nashalign.oracles._loopback import FaultProxy, judge_pairs

ROOT = Path(__file__).resolve().parents[2]
PAIRS = judge_pairs(12, seed=3)


def _served(url, **kw):
    kw.setdefault("api", "completions")
    kw.setdefault("mode", "logprobs")
    return ServedJudgeOracle(url, "tiny-judge", **kw)


@pytest.fixture(scope="module")
def reference_p(vllm_server):
    """Fault-free answers straight from the server (one order)."""
    return _served(vllm_server.base_url)(*PAIRS)


@pytest.fixture
def proxy(vllm_server):
    with FaultProxy(f"http://127.0.0.1:{vllm_server.port}", slow_s=1.5) as p:
        yield p


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_logprob_answers_equal_the_in_process_judge(api, vllm_server, served_judge_dir):
    served = _served(vllm_server.base_url, api=api)
    got = served.judge(*PAIRS)
    local = LLMJudgeOracle.from_pretrained(served_judge_dir, use_chat_template=False, device="cpu")(*PAIRS)
    assert got.method == ("logprobs",) * 12 and torch.all(got.stderr == 0) and torch.all(got.n == 0)
    torch.testing.assert_close(got.p, local.double(), atol=2e-4, rtol=0)
    assert float(got.p.min()) < 0.4 and float(got.p.max()) > 0.6  # the judge really discriminates


def test_sampled_verdicts_estimate_the_same_probability(vllm_server, reference_p, served_judge_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(served_judge_dir)
    allowed = [tok.convert_tokens_to_ids(t) for t in ("A", "B")]
    k = 64
    served = _served(vllm_server.base_url, mode="sample", samples=k, extra_body={"allowed_token_ids": allowed})
    got = served.judge(*PAIRS)
    assert got.method == ("sample",) * 12 and torch.all(got.n == k)
    torch.testing.assert_close(got.stderr, (got.p * (1 - got.p) / k).sqrt())
    sd = (reference_p * (1 - reference_p) / k).sqrt()
    assert torch.all((got.p - reference_p).abs() <= 4.5 * sd), (got.p, reference_p)


def test_both_orders_are_combined_by_symmetrize(vllm_server):
    served = _served(vllm_server.base_url)
    x, a, b = PAIRS
    sym = symmetrize(served)(x, a, b)
    ab, ba = served(x, a, b), served(x, b, a)
    torch.testing.assert_close(sym, (ab + 1 - ba) / 2, atol=1e-6, rtol=0)
    assert torch.all(symmetrize(served)(x, b, a) + sym == 1.0)


def test_every_fault_is_retried_to_the_right_answer(proxy, reference_p):
    cycle = ["429", "ok", "500", "malformed", "drop", "ok", "slow"]
    proxy.reset(lambda n: cycle[n % len(cycle)])
    served = _served(proxy.base_url, timeout=1.0, max_retries=12, backoff=0.02, max_backoff=0.2, max_concurrency=4)
    got = served(*PAIRS)
    torch.testing.assert_close(got, reference_p, atol=1e-5, rtol=0)
    assert set(proxy.faults) == {"429", "500", "malformed", "drop", "slow"} and served.retries >= sum(
        proxy.faults.values()
    )


def test_retry_after_is_honoured(proxy, reference_p):
    proxy.reset(lambda n: "429" if n == 0 else "ok")  # the proxy sends Retry-After: 1
    served = _served(proxy.base_url, backoff=0.01, max_backoff=0.01)
    start = time.perf_counter()
    got = served(PAIRS[0][:1], PAIRS[1][:1], PAIRS[2][:1])
    assert time.perf_counter() - start >= 1.0 and served.retries == 1
    torch.testing.assert_close(got, reference_p[:1], atol=1e-5, rtol=0)


def test_giving_up_names_the_endpoint_and_the_query(proxy, vllm_server):
    proxy.reset(lambda n: "500")
    served = _served(proxy.base_url, max_retries=2, backoff=0.01)
    with pytest.raises(
        OracleError, match=r"gave up on query #0 \(prompt=.*first=.*\) at http://127\.0\.0\.1.*3 attempts"
    ):
        served(["which is best?"], ["this one"], ["that one"])
    assert proxy.seen == 3
    proxy.reset(lambda n: "ok")  # a client error (unknown model) is not retried
    wrong = ServedJudgeOracle(proxy.base_url, "no-such-model", api="completions", backoff=0.01)
    with pytest.raises(OracleError, match=r"HTTP 404.*not retried"):
        wrong(["q"], ["a"], ["b"])
    assert proxy.seen == 1


def test_disk_cache_under_faults_stores_only_right_answers(proxy, reference_p, tmp_path):
    cycle = ["ok", "500", "malformed", "drop"]
    proxy.reset(lambda n: cycle[n % len(cycle)])
    served = _served(proxy.base_url, timeout=2.0, max_retries=12, backoff=0.02, max_backoff=0.1)
    cached = disk_cached(served, tmp_path / "p.sqlite", commit_every=5)
    torch.testing.assert_close(cached(*PAIRS), reference_p, atol=1e-5, rtol=0)
    assert len(cached) == 12
    proxy.reset(lambda n: "ok")
    again = disk_cached(_served(proxy.base_url), tmp_path / "p.sqlite")(*PAIRS)
    assert proxy.seen == 0 and torch.equal(again, cached(*PAIRS))


KILL_SCRIPT = """
import sys
from nashalign.oracles import ServedJudgeOracle, disk_cached, symmetrize
from nashalign.oracles._loopback import judge_pairs
url, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
x, a, b = judge_pairs(n, seed=11)
judge = ServedJudgeOracle(url, "tiny-judge", api="completions", mode="logprobs", max_concurrency=4)
oracle = disk_cached(symmetrize(judge), db, commit_every=4)
for s in range(0, n, 4):
    oracle(x[s:s + 4], a[s:s + 4], b[s:s + 4])
    print("chunk", s, flush=True)
print("done", oracle.misses, flush=True)
"""


def test_killed_run_is_resumed_without_paying_twice(proxy, vllm_server, tmp_path):
    n = 160
    script, db = tmp_path / "run.py", tmp_path / "prefs.sqlite"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    identity = oracle_identity(symmetrize(_served(proxy.base_url, max_concurrency=4)))
    store = PreferenceStore(db)
    cmd = [sys.executable, str(script), proxy.base_url, str(db), str(n)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and store.count(identity) >= 24:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run finished before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)  # a real kill: no cleanup, no commit
    proc.wait(timeout=30)
    kept = store.count(identity)
    assert 24 <= kept < n
    settled = -1
    while settled != proxy.seen:  # requests the killed run had sent may still reach the proxy's threads late
        settled = proxy.seen
        time.sleep(1.0)
    proxy.reset()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"done {n - kept}" in done.stdout  # the rerun sent only the pairs the killed run had not stored
    assert proxy.forwarded == 2 * (n - kept)  # both orders of each new pair, and nothing else, reached the server
    assert store.count(identity) == n
    x, a, b = judge_pairs(n, seed=11)
    fresh = symmetrize(_served(vllm_server.base_url))(x, a, b)
    stored = disk_cached(symmetrize(_served(proxy.base_url, max_concurrency=4)), db)(x, a, b)
    torch.testing.assert_close(stored, fresh, atol=1e-5, rtol=0)


def test_api_key_is_sent_but_never_shown(proxy, reference_p, monkeypatch, caplog, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    secret = "sk-test-" + "7f3a9c" * 4
    monkeypatch.setenv("NASHALIGN_TEST_KEY", secret)
    cfg = OmegaConf.load(ROOT / "conf" / "oracle" / "served.yaml")
    cfg.oracle.base_url, cfg.oracle.model = proxy.base_url, "tiny-judge"
    cfg.oracle.api, cfg.oracle.api_key_env = "completions", "NASHALIGN_TEST_KEY"
    caplog.set_level(logging.DEBUG)
    oracle = instantiate(cfg)
    got = oracle(*PAIRS)
    served = oracle.unwrap()
    torch.testing.assert_close(served(*PAIRS), reference_p, atol=1e-5, rtol=0)
    assert proxy.headers.get("Authorization") == f"Bearer {secret}"
    assert torch.all((got >= 0) & (got <= 1))
    dumps = [repr(oracle), str(oracle), repr(served), str(vars(served)), OmegaConf.to_yaml(cfg), caplog.text,
             served.identity(), pickle.dumps(served).decode("latin-1")]  # fmt: skip
    assert all(secret not in d for d in dumps)
    proxy.reset(lambda n: "500")
    with pytest.raises(OracleError) as err:
        _served(proxy.base_url, api_key_env="NASHALIGN_TEST_KEY", max_retries=0)(["q"], ["a"], ["b"])
    assert secret not in str(err.value) and secret not in caplog.text
    monkeypatch.delenv("NASHALIGN_TEST_KEY")
    with pytest.raises(OracleError, match="NASHALIGN_TEST_KEY"):
        served(["q"], ["a"], ["b"])
