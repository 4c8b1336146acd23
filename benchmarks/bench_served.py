"""Load test of ServedJudgeOracle against a real vLLM server on 127.0.0.1 (CPU, tiny llama judge).

    NASHALIGN_VLLM_PYTHON=/path/to/venv-with-vllm/bin/python python benchmarks/bench_served.py
    python benchmarks/bench_served.py --pairs 2000 --concurrency 1 8 32 --fault-rate 0.05

For each concurrency: one call with ``--pairs`` pairs (one request each, log-prob answers), wall time,
throughput (pairs/s) and per-pair latency percentiles (from the first attempt's start, once a concurrency
slot is free, to the answer, retries and back-off included).  Then the same burst through the fault proxy (``--fault-rate`` of requests get a 429 with
Retry-After 1 s, a 500, a malformed body or a dropped connection; answers are checked against the fault-free
ones), and a rerun through the persistent cache (every pair a hit, no request).  Writes
``results/served-<machine>.json`` and ``.md``.  Numbers depend on the server's CPU share: the vLLM engine and
this client run on the same cores.  A retried pair waits again for a free slot behind the pairs still queued, so
under faults its latency includes part of the burst's queue (the p99 of the fault row).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import fmt_s, header, machine_slug, markdown_table, write  # noqa: E402

from nashalign.oracles import ServedJudgeOracle, disk_cached  # noqa: E402
from nashalign.oracles._loopback import FaultProxy, VLLMServer, build_tiny_judge, judge_pairs  # noqa: E402


def burst(url: str, pairs: tuple[list[str], ...], concurrency: int, **kw: Any) -> tuple[dict[str, Any], Any]:
    oracle = ServedJudgeOracle(url, "tiny-judge", api="completions", mode="logprobs", max_concurrency=concurrency,
                               **kw)  # fmt: skip
    start = time.perf_counter()
    p = oracle(*pairs)
    wall = time.perf_counter() - start
    lat = np.asarray(oracle.last_latencies)
    row = {
        "pairs": len(pairs[0]),
        "concurrency": concurrency,
        "wall_s": wall,
        "pairs_per_s": len(pairs[0]) / wall,
        "requests": oracle.requests,
        "retries": oracle.retries,
        **{f"latency_p{q}_s": float(np.percentile(lat, q)) for q in (50, 90, 99)},
        "latency_max_s": float(lat.max()),
    }
    return row, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--fault-rate", type=float, default=0.05)
    default_py = str(Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python")
    ap.add_argument("--python", default=os.environ.get("NASHALIGN_VLLM_PYTHON", default_py))
    args = ap.parse_args()
    record = header("served", ["vllm", "httpx", "httpx2"])
    record["settings"] = vars(args)
    pairs = judge_pairs(args.pairs, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_judge(Path(tmp) / "judge")
        with VLLMServer(args.python, model) as server:
            burst(server.base_url, tuple(x[:16] for x in pairs), 4)  # warm-up
            rows, reference = [], None
            for c in args.concurrency:
                n = args.pairs if c > 1 else min(args.pairs, 200)
                row, p = burst(server.base_url, tuple(x[:n] for x in pairs), c)
                row["case"] = "clean"
                rows.append(row)
                if n == args.pairs:
                    reference = p
                print(row, flush=True)
            rng = random.Random(0)
            kinds = ["429", "500", "malformed", "drop"]

            def schedule(_: int) -> str:
                return rng.choice(kinds) if rng.random() < args.fault_rate else "ok"

            with FaultProxy(f"http://127.0.0.1:{server.port}", schedule=schedule) as proxy:
                c = max(args.concurrency)
                row, p = burst(proxy.base_url, pairs, c, backoff=0.05, max_backoff=1.0, max_retries=10)
                row.update(case=f"faults {args.fault_rate:.0%}", faults=dict(proxy.faults))
                if reference is not None:
                    row["max_abs_diff_vs_clean"] = float((p - reference).abs().max())
                rows.append(row)
                print(row, flush=True)
            db = Path(tmp) / "prefs.sqlite"
            judge = ServedJudgeOracle(server.base_url, "tiny-judge", api="completions", mode="logprobs",
                                      max_concurrency=max(args.concurrency))  # fmt: skip
            disk_cached(judge, db)(*pairs)
            start = time.perf_counter()
            cached = disk_cached(judge, db)
            cached(*pairs)
            wall = time.perf_counter() - start
            rows.append({"case": "cache hits", "pairs": args.pairs, "wall_s": wall, "pairs_per_s": args.pairs / wall,
                         "requests": judge.requests - args.pairs, "hits": cached.hits})  # fmt: skip
            print(rows[-1], flush=True)
    record["rows"] = rows
    cols = ["case", "pairs", "concurrency", "wall", "pairs/s", "p50", "p90", "p99", "max", "retries"]
    table = [
        {
            "case": r["case"], "pairs": r["pairs"], "concurrency": r.get("concurrency", "-"), "wall": fmt_s(r["wall_s"]),
            "pairs/s": f"{r['pairs_per_s']:.1f}", "p50": fmt_s(r.get("latency_p50_s")),
            "p90": fmt_s(r.get("latency_p90_s")), "p99": fmt_s(r.get("latency_p99_s")),
            "max": fmt_s(r.get("latency_max_s")), "retries": r.get("retries", 0),
        }
        for r in rows
    ]  # fmt: skip
    md = "# ServedJudgeOracle against vLLM (CPU, tiny llama judge, 127.0.0.1)\n\n" + markdown_table(table, cols)
    js, mdp = write("served", machine_slug(), record, md)
    print(md)
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
