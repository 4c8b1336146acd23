"""The apps' presets as a user runs them: wall time and the numbers the README and docs quote.

Each part runs one preset by subprocess (``tabular/run.py`` or ``llm/train.py``, as ``make demo`` does), times it
end to end (Python and Hydra start-up, cvxpy's equilibria, every job) and collects its results:

* ``tabular_demo``: ``tabular/run.py +experiment=demo`` (33 runs), each run's final last/average metric;
* ``egpo_tabular``: ``tabular/run.py +experiment=egpo_tabular`` (15 runs), median and max DG_beta over 10 games;
* ``lm_benchmark``: ``llm/train.py +experiment=lm_benchmark`` (11 algorithms), exploitability and KL(pi*_tau || pi)
  before/after/min and the oracle queries of each, plus its ``curves.png``;
* ``lm_demo``: ``llm/train.py +experiment=lm_benchmark_demo`` (`make demo`'s ending), Nash-MD before/after.

Writes ``app_<part>-<machine>.json`` and ``.md`` per part; with ``--write`` (or ``--machine``) into
``benchmarks/results/`` (and ``lm_benchmark``'s curves into ``docs/llm_benchmark.png``), else into
``outputs/benchmarks/``.  ``benchmarks/docs_numbers.py --write`` then puts the numbers into the docs.

    python benchmarks/bench_apps.py --parts lm_benchmark lm_demo --write
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

#: part -> (app script, preset, whether it is a multirun)
PARTS: dict[str, tuple[str, str, bool]] = {
    "tabular_demo": ("tabular/run.py", "demo", True),
    "egpo_tabular": ("tabular/run.py", "egpo_tabular", True),
    "lm_benchmark": ("llm/train.py", "lm_benchmark", True),
    "lm_demo": ("llm/train.py", "lm_benchmark_demo", False),
}


def run_preset(part: str, out: Path, timeout: float) -> tuple[float, float]:
    """Run the preset of ``part`` into ``out`` (emptied first): its wall time and CPU time (user + sys), seconds.

    On a shared machine the wall time grows with the load (recorded in the results file); the CPU time less so.
    """
    script, preset, multirun = PARTS[part]
    if out.exists():
        shutil.rmtree(out)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(common.REPO / script), f"+experiment={preset}", f"{key}={out}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (out / "stdout.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{part}: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, cpu


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def tabular_results(out: Path, by_tau: bool) -> dict[str, Any]:
    """``summary.csv`` of a tabular sweep as ``{game: {algorithm: row}}`` (``{tau: {label: row}}`` with ``by_tau``)."""
    with open(out / "summary.csv") as f:
        rows = [{k: _num(v) for k, v in r.items() if k != "dir"} for r in csv.DictReader(f)]
    res: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = f"{r['tau']:g}" if by_tau else str(r["game"])
        res.setdefault(key, {})[str(r["algorithm"])] = r
    return res


def lm_results(out: Path) -> dict[str, Any]:
    """Per algorithm of an LM sweep: first/last/min of exploitability and KL, last invalid mass, queries."""
    res = {}
    for path in sorted(out.rglob("metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        rec: dict[str, Any] = {"iterations": rows[-1].get("iteration"), "queries": max(int(r.get("queries", 0)) for r in rows)}
        for key in ("exploitability", "kl_target", "invalid_mass"):
            vals = [float(r[key]) for r in rows if r.get(key) is not None]
            if vals:
                rec.update({f"{key}_before": vals[0], f"{key}_after": vals[-1], f"{key}_min": min(vals)})
        res[str(rows[0].get("algorithm", path.parent.name))] = rec
    return res


def collect(part: str, out: Path) -> dict[str, Any]:
    if part in ("tabular_demo", "egpo_tabular"):
        res = tabular_results(out, by_tau=part == "egpo_tabular")
        return {"runs": sum(len(v) for v in res.values()), "results": res}
    if part == "lm_benchmark":
        res = lm_results(out)
        return {"runs": len(res), "results": res}
    summary = json.loads((out / "summary.json").read_text())
    return {"runs": 1, "results": {summary["algorithm"]: summary}}


def markdown(part: str, rec: dict[str, Any]) -> str:
    head = (f"# `{rec['command']}`: {rec['runs']} run(s) in {rec['wall_s']:.0f} s wall, {rec['cpu_s']:.0f} s CPU "
            f"(load average {rec['load_average_start']})\n\n")  # fmt: skip
    res = rec["results"]
    if part in ("tabular_demo", "egpo_tabular"):
        flat = [(group, name, r) for group, d in res.items() for name, r in d.items()]
    else:
        flat = [("", name, r) for name, r in res.items()]
    rows = [{"group": g, "run": name, **{k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in r.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}} for g, name, r in flat]  # fmt: skip
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return head + common.markdown_table(rows, cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS), help="which presets (default: all)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="cap per preset, seconds")
    common.add_output_args(ap)
    args = ap.parse_args()
    publish = common.publishing(args)
    machine = args.machine or common.machine_slug()
    for part in args.parts:
        out = common.SCRATCH / "apps" / part
        print(f"[{part}] running {PARTS[part][0]} +experiment={PARTS[part][1]} ...", file=sys.stderr, flush=True)
        rec = common.header(f"app_{part}", ["hydra-core", "transformers", "cvxpy"])
        rec["command"] = f"python {PARTS[part][0]} +experiment={PARTS[part][1]}"
        rec["wall_s"], rec["cpu_s"] = run_preset(part, out, args.timeout)
        rec.update(collect(part, out))
        md = markdown(part, rec)
        if not args.no_write:
            js, _ = common.write(f"app_{part}", machine, rec, md, publish=publish)
            print(f"[{part}] {rec['wall_s']:.1f} s; wrote {js}", file=sys.stderr)
            if part == "lm_benchmark" and (out / "curves.png").exists():
                png = (common.REPO / "docs" if publish else common.SCRATCH) / "llm_benchmark.png"
                png.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / "curves.png", png)
        print(md)


if __name__ == "__main__":
    main()
