"""nashalign's LLM trainer side by side with TRL: throughput, peak memory and the fixed point reached.

    python benchmarks/bench_llm_peers.py                      # CPU: tiny + small models, ~10-15 min after installs
    python benchmarks/bench_llm_peers.py --quick              # a few minutes
    python benchmarks/bench_llm_peers.py --device cuda --model 0.5b   # one GPU, bf16, Qwen2-0.5B-shaped model

Peers run in their own virtual environments, made here (never dependencies of nashalign), under
``--peers-dir`` (default ``benchmarks/.peers``; keep it out of git):

* ``trl-1.13.0``: the last TRL with ``NashMDTrainer`` (reward model only; it needs ``requests``);
* ``trl-1.16.0``: ``trl.experimental.online_dpo.OnlineDPOTrainer`` (``loss_type="ipo"``).

Each venv gets this interpreter's torch version first (``pip install torch==X``: the local CPU build, no
multi-GB CUDA wheels), then TRL; pip picks transformers/accelerate.  TRL runs through
``benchmarks/peer_trl/trl_driver.py`` inside its venv; it reads the model, tokenizer and prompts that this
script saved (``from_pretrained``) and imports nothing of nashalign.

Throughput (same model, prompts, per-device batch, generation length, precision, AdamW and learning rate;
gradient checkpointing off; one optimizer step per batch of prompts on both sides; the same reward
``r(x, y) = sum_t w[y_t]`` so both use Bradley-Terry ``sigmoid(r1 - r2)``):

* nashalign ``NashMD`` (``estimator="opponent"``, ``k = 2`` policy samples + 1 mixture sample per prompt,
  both loss forms) vs TRL 1.13 ``NashMDTrainer`` (1 policy + 1 mixture sample per prompt);
* nashalign ``OnlineIPO`` (2 policy samples per prompt) and ``EGPO`` (two phases) vs TRL 1.16
  ``OnlineDPOTrainer(loss_type="ipo")`` (2 policy samples per prompt).

samples/s counts every completion generated (mixture ones included) over the wall time of whole training
steps; steps/s counts optimizer steps.  Best of 3 windows after warm-up steps.  Peak memory: peak RSS of
each side's own process on CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on GPU.

Correctness (the known-equilibrium benchmark, :mod:`nashalign.llm.synthetic`, exact metrics): Nash-MD with
the theory's mixture (``eta * tau``) against the mixture 0.5 that TRL uses by default, on the RPS prompt
(intransitive: TRL >= 1.1 cannot express it, so the mixture-0.5 run is nashalign's ``NashMD(mixture=0.5)``,
which implements TRL's mixture semantics), next to the exact tabular fixed points (SPEC.md 12(d)); and TRL
1.13's own ``NashMDTrainer`` (mixture 0.5) on the transitive prompt, whose Bradley-Terry game a reward model
can express, against nashalign on the same prompt.

TRL 1.13 + transformers 5 samples its mixture opponent wrongly (a KV cache shared by the policy and the
reference, see ``peer_trl/trl_driver.py``); the driver patches that at run time (two lines, documented
there) and the benchmark reports TRL both patched (what TRL intends: no KV cache) and as installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DRIVER = HERE / "peer_trl" / "trl_driver.py"
PEERS = {
    "trl113": ("1.13.0", ["trl==1.13.0", "requests"]),
    "trl116": ("1.16.0", ["trl==1.16.0", "requests"]),
    "trl100": ("1.0.0", ["trl==1.0.0", "requests"]),  # the last TRL with pairwise judges (for RPS)
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
MODELS = {
    # name: (arch, vocab, config kwargs)
    "tiny": (
        "llama",
        512,
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
    ),
    "small": (
        "llama",
        1024,
        dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    ),
    "0.5b": (
        "qwen2",
        8192,
        dict(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
        ),
    ),
}
WORDS = (
    "the a model answer question explain why how river mountain city light music history science water energy "
    "market language garden winter summer story number machine friend teacher ocean forest road bridge simple "
    "short careful clear kind quick old new small large bright quiet"
).split()


# =============================================================================================== peers
def peer_python(peers_dir: Path, name: str) -> Path:
    return peers_dir / f"trl-{PEERS[name][0]}" / "bin" / "python"


def setup_peer(peers_dir: Path, name: str, skip_install: bool) -> dict[str, Any]:
    """Create (or reuse) the peer's venv; returns what happened, with versions and times."""
    import torch

    version, reqs = PEERS[name]
    venv = peers_dir / f"trl-{version}"
    py = venv / "bin" / "python"
    probe = (
        "import json, importlib.metadata as m; print(json.dumps({k: m.version(k) for k in "
        "['trl', 'transformers', 'accelerate', 'torch', 'datasets']}))"
    )

    def installed() -> dict[str, str] | None:
        if not py.exists():
            return None
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if r.returncode != 0:
            return None
        v = json.loads(r.stdout)
        return v if v.get("trl") == version else None

    have = installed()
    if have:
        return {"status": "reused", "venv": str(venv), "versions": have}
    if skip_install:
        return {"status": "missing (--skip-install)", "venv": str(venv)}
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    t0 = time.perf_counter()
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(py), "-m", "pip", "install", "-q", torch_pin],
        [str(py), "-m", "pip", "install", "-q", *reqs],
    ]
    for cmd in steps:
        print(f"[peers] {' '.join(cmd[-3:])}", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            err = "\n".join(line for line in r.stderr.splitlines() if "is ignored" not in line)[-2000:]
            return {
                "status": "failed",
                "venv": str(venv),
                "command": cmd,
                "error": err,
                "seconds": time.perf_counter() - t0,
            }
    have = installed()
    return {
        "status": "installed" if have else "failed (import)",
        "venv": str(venv),
        "versions": have,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# =============================================================================================== shared inputs
def make_prompts(n: int = 64, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 18))).capitalize() + "?" for _ in range(n)]


def build_model(name: str, prompts: list[str], out: Path, seed: int = 0) -> dict[str, Any]:
    """A random-weight causal LM + BPE tokenizer saved to ``out`` (both sides load it from there)."""
    import torch

    from nashalign.llm.tiny import build_scratch_policy

    arch, vocab, cfg = MODELS[name]
    policy = build_scratch_policy(
        prompts,
        arch=arch,
        vocab_size=vocab,
        tokenizer_texts=prompts * 4 + WORDS,
        device="cpu",
        seed=seed,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        **cfg,
    )
    policy.model.generation_config.pad_token_id = policy.tokenizer.pad_token_id
    policy.save_pretrained(str(out))
    n_params = sum(p.numel() for p in policy.model.parameters())
    g = torch.Generator().manual_seed(seed + 1)
    w = 0.3 * torch.randn(len(policy.tokenizer), generator=g)
    w[policy.tokenizer.pad_token_id] = 0.0
    torch.save(w, out / "reward_w.pt")
    return {"model": name, "arch": arch, "vocab": len(policy.tokenizer), "parameters": n_params, **cfg}


# =============================================================================================== nashalign worker
def run_worker(spec_path: str, out_path: str) -> None:
    """Inside a fresh process: time nashalign's trainer (``--worker``)."""
    import resource

    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(int(spec.get("threads", 1)))
    from nashalign.algorithms import get_algorithm
    from nashalign.llm.policy import CausalLMPolicy
    from nashalign.llm.trainer import NashTrainer, TrainerConfig
    from nashalign.oracles import RewardModelOracle

    cuda = spec["device"] == "cuda"
    policy = CausalLMPolicy.from_pretrained(spec["model_dir"], use_chat_template=False, device=spec["device"])
    tok = policy.tokenizer
    w = torch.load(Path(spec["model_dir"]) / "reward_w.pt").tolist()

    def score(prompts, responses):
        return [sum(w[t] for t in tok(r, add_special_tokens=False)["input_ids"]) for r in responses]

    oracle = RewardModelOracle(score, name="token reward")
    alg = get_algorithm(spec["algorithm"], **spec["hp"])
    W, S, N = spec["warmup"], spec["steps"], spec["windows"]
    cfg = TrainerConfig(
        iterations=W + S * N,
        prompts_per_iteration=spec["batch"],
        k=2,
        opponent_samples=1,
        max_new_tokens=spec["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        epochs=1,
        minibatch_size=spec["batch"],
        learning_rate=spec["lr"],
        weight_decay=0.0,
        max_grad_norm=1.0,
        mixed_precision="bf16" if (cuda and spec.get("bf16")) else "no",
        cpu=not cuda,
        num_threads=int(spec.get("threads", 1)),
        track_win_rate=False,
        progress=False,
        save_final_model=False,
        output_dir=spec["output_dir"],
        seed=spec.get("seed", 0),
    )
    trainer = NashTrainer(policy, alg, oracle, spec["prompts"], cfg)

    parts = {"generate": 0.0, "logprobs(no grad)": 0.0, "logprobs(grad)": 0.0, "oracle": 0.0}
    counts = {"completions": 0}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, key):
        def wrapper(*a, **k):
            sync()
            t0 = time.perf_counter()
            try:
                out = fn(*a, **k)
            finally:
                sync()
                name = key(k) if callable(key) else key
                parts[name] += time.perf_counter() - t0
            if name == "generate":
                counts["completions"] += len(out)
            return out

        return wrapper

    policy.generate = timed(policy.generate, "generate")
    policy.sequence_logprobs = timed(
        policy.sequence_logprobs, lambda k: "logprobs(grad)" if k.get("grad") else "logprobs(no grad)"
    )
    trainer.oracle = timed(trainer.oracle, "oracle")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    step_times, part_rows, comp, opt_steps = [], [], [], []
    for _ in range(cfg.iterations):
        for p in parts:
            parts[p] = 0.0
        counts["completions"] = 0
        sync()
        t0 = time.perf_counter()
        trainer.step()
        sync()
        dt = time.perf_counter() - t0
        step_times.append(dt)
        row = dict(parts)
        row["loss+backward+optimizer(rest)"] = dt - sum(parts.values())
        part_rows.append(row)
        comp.append(counts["completions"])
        opt_steps.append(alg.phases * trainer.steps_per_epoch() * cfg.epochs)
    windows = [sum(step_times[W + i * S : W + (i + 1) * S]) for i in range(N)]
    best = min(range(N), key=lambda i: windows[i])
    sl = slice(W + best * S, W + (best + 1) * S)
    rows = part_rows[sl]
    out = {
        "step_times": step_times,
        "window_s": windows,
        "best_window_s": windows[best],
        "steps_per_s": sum(opt_steps[sl]) / windows[best],
        "samples_per_s": sum(comp[sl]) / windows[best],
        "prompts_per_s": spec["batch"] * S / windows[best],
        "completions_per_iteration": comp[-1],
        "optimizer_steps_per_iteration": opt_steps[-1],
        "seconds_per_iteration_by_part": {k: sum(r[k] for r in rows) / S for k in rows[0]},
        "rss_before_train_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
    }
    Path(out_path).write_text(json.dumps(out, indent=1))


def run_subprocess(cmd: list[str], out: Path, timeout: float, label: str) -> dict[str, Any]:
    env = {**os.environ, **OFFLINE, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if r.returncode != 0 or not out.exists():
        tail = "\n".join(r.stderr.splitlines()[-25:])
        print(f"[{label}] FAILED (rc={r.returncode}):\n{tail}", flush=True)
        return {"error": tail[-3000:], "rc": r.returncode}
    res = json.loads(out.read_text())
    res["process_wall_s"] = round(wall, 1)
    return res


# =============================================================================================== throughput
def throughput(args, peers, work: Path, model_name: str, prompts: list[str]) -> tuple[dict, list[dict]]:
    model_dir = work / f"model-{model_name}"
    info = build_model(model_name, prompts, model_dir)
    base = dict(
        model_dir=str(model_dir),
        prompts=prompts,
        batch=args.batch,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        device=args.device,
        bf16=args.device == "cuda",
        threads=args.threads,
        warmup=args.warmup,
        steps=args.steps,
        windows=3,
        seed=0,
    )
    tau = 0.1
    jobs = [
        (
            "Nash-MD",
            "nashalign",
            "nash_md (regression)",
            dict(algorithm="nash_md", hp=dict(eta=0.5, tau=tau, mixture=0.5)),
        ),
        (
            "Nash-MD",
            "nashalign",
            "nash_md (pg)",
            dict(algorithm="nash_md", hp=dict(eta=0.5, tau=tau, mixture=0.5, form="pg")),
        ),
        ("Nash-MD", "trl113", "NashMDTrainer", dict(trainer="nash_md", mixture_coef=0.5, beta=tau)),
        (
            "Nash-MD",
            "trl113",
            "NashMDTrainer (as installed: shared-cache mixture, wrong samples)",
            dict(trainer="nash_md", mixture_coef=0.5, beta=tau, patch_mixture_cache=False),
        ),
        ("online IPO", "nashalign", "online_ipo", dict(algorithm="online_ipo", hp=dict(eta=0.5, tau=tau))),
        ("online IPO", "nashalign", "egpo", dict(algorithm="egpo", hp=dict(eta=0.5, tau=tau))),
        ("online IPO", "trl116", "OnlineDPOTrainer(ipo)", dict(trainer="online_dpo", loss_type="ipo", beta=tau)),
    ]
    results = []
    for group, side, label, extra in jobs:
        tag = f"{model_name}-{side}-{label.split()[0].replace('(', '').replace(')', '')}-{len(results)}"
        spec = {**base, **extra, "output_dir": str(work / "out" / tag)}
        spec_path, out_path = work / f"{tag}.spec.json", work / f"{tag}.out.json"
        if side != "nashalign":
            spec["reward"] = {"kind": "token", "w_path": str(model_dir / "reward_w.pt")}
        spec_path.write_text(json.dumps(spec))
        if side == "nashalign":
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path), str(out_path)]
        else:
            if peers.get(side, {}).get("status") not in ("installed", "reused"):
                results.append({"group": group, "side": side, "label": label, "error": "peer not installed"})
                continue
            cmd = [str(peer_python(args.peers_dir, side)), str(DRIVER), str(spec_path), str(out_path)]
        print(f"[throughput {model_name}] {side}: {label} ...", flush=True)
        res = run_subprocess(cmd, out_path, args.timeout, f"{model_name} {label}")
        res.update(group=group, side=side, label=label, model=model_name)
        if "samples_per_s" in res:
            print(
                f"    {res['samples_per_s']:.1f} samples/s, {res['steps_per_s']:.3f} steps/s, "
                f"peak RSS {res['peak_rss_mb']:.0f} MB",
                flush=True,
            )
        results.append(res)
    return info, results


# =============================================================================================== correctness
def correctness(args, peers, work: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from nashalign import solve
    from nashalign.algorithms import get_algorithm
    from nashalign.game import PreferenceGame
    from nashalign.llm.policy import CausalLMPolicy
    from nashalign.llm.synthetic import (
        ExactEvaluator,
        SyntheticTask,
        _class_matrix,
        build_tiny_policy,
        extended_game,
        response_distribution,
    )
    from nashalign.llm.trainer import NashTrainer, TrainerConfig
    from nashalign.oracles import RewardModelOracle

    torch.set_num_threads(args.threads)
    tau = 0.1
    quick = args.quick
    out: dict[str, Any] = {"tau": tau}

    # The exact tabular fixed points (SPEC.md 12(d)): RPS, mu = (0.7, 0.2, 0.1).
    rps_mu = (0.7, 0.2, 0.1)
    tab = {}
    g = PreferenceGame(_class_matrix("rps")[None], ref=np.array([rps_mu]))
    for mix in (None, 0.125, 0.5):
        r = solve(
            g,
            "nash_md",
            eta=0.05 if mix is None else 1.0,
            tau=tau,
            steps=20000,
            **({} if mix is None else {"mixture": mix}),
        )
        last = r.history.rows[-1]
        tab["theory" if mix is None else f"mixture={mix}"] = {
            "policy": np.asarray(r.last)[0].round(4).tolist(),
            "exploitability": last["expl_last"],
            "kl_target": last["kl_target_last"],
        }
    out["tabular_rps"] = {"mu": rps_mu, "fixed_points": tab}

    def task_for(name: str, prompt: str, responses, mu) -> SyntheticTask:
        return SyntheticTask(
            prompts=[prompt],
            responses=[tuple(responses)],
            matrices=_class_matrix(name)[None],
            warmup_reference=np.array([mu]),
            names=[name],
        )

    def lm_fixed_points(task, mu_lm):
        """Exact fixed points of Nash-MD (theory) and of mixture 0.5 for the LM's own mu (extended game)."""
        game = extended_game(task, mu_lm)
        ev = ExactEvaluator(task, tau=tau, mu=mu_lm)
        res = {}
        for key, mix in (("theory", None), ("mixture=0.5", 0.5)):
            r = solve(
                game,
                "nash_md",
                eta=0.05 if mix is None else 1.0,
                tau=tau,
                steps=20000,
                **({} if mix is None else {"mixture": mix}),
            )
            e = ev(np.asarray(r.last))
            res[key] = {"exploitability": e.mean_exploitability, "kl_target": e.mean_kl_target}
        return res

    iters = 40 if quick else 100
    B = 24 if quick else 48
    common = dict(
        iterations=iters,
        prompts_per_iteration=B,
        max_new_tokens=4,
        cpu=True,
        progress=False,
        save_final_model=False,
        track_win_rate=False,
        num_threads=args.threads,
        eval_every=5,
    )

    def run_nashalign(task, prompt_model, alg, oracle, cfg, label):
        policy = CausalLMPolicy.from_pretrained(prompt_model, use_chat_template=False)
        mu = response_distribution(policy, task)
        ev = ExactEvaluator(task, tau=tau, mu=mu)
        tr = NashTrainer(
            policy,
            alg,
            oracle,
            task.prompts,
            TrainerConfig(**{**common, **cfg, "output_dir": str(work / "corr" / label)}),
            evaluate=lambda p: ev(p).as_dict(per_prompt=False),
        )
        t0 = time.perf_counter()
        hist = tr.train()
        curve = [
            {
                "iteration": r["iteration"],
                "exploitability": r["exploitability"],
                "kl_target": r["kl_target"],
                "invalid_mass": r.get("invalid_mass"),
            }
            for r in hist
            if "exploitability" in r
        ]
        print(
            f"[correctness] {label}: expl {curve[0]['exploitability']:.3f} -> {curve[-1]['exploitability']:.3f}, "
            f"KL {curve[0]['kl_target']:.3g} -> {curve[-1]['kl_target']:.3g} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        return curve

    def tail_mean(curve, key):
        tail = curve[len(curve) // 2 :]
        return float(np.mean([r[key] for r in tail]))

    def run_trl(peer, task, model_dir, reward, patch, label):
        """TRL's NashMDTrainer (mixture_coef=0.5) in its venv; exact metrics from its class distribution."""
        if peers.get(peer, {}).get("status") not in ("installed", "reused"):
            return None
        pol = CausalLMPolicy.from_pretrained(str(model_dir), use_chat_template=False)
        mu = response_distribution(pol, task)
        ev = ExactEvaluator(task, tau=tau, mu=mu)
        n = task.num_classes
        enc = pol.encode(task.prompts, list(task.responses[0]), prompt_index=[0] * n)
        items = [
            {
                "prompt": enc.prompt_ids[0][enc.prompt_mask[0].bool()].tolist(),
                "responses": [enc.response_ids[i][enc.response_mask[i].bool()].tolist() for i in range(n)],
            }
        ]
        tag = f"{peer}-{task.names[0]}-{patch}"
        spec = dict(
            model_dir=str(model_dir),
            prompts=task.prompts,
            batch=B,
            max_new_tokens=4,
            lr=1e-3,
            device="cpu",
            threads=args.threads,
            warmup=0,
            steps=iters,
            windows=1,
            seed=0,
            trainer="nash_md",
            mixture_coef=0.5,
            beta=tau,
            eval_every=5,
            eval=items,
            patch_mixture_cache=patch,
            reward=reward,
            output_dir=str(work / "corr" / tag),
        )
        sp, op = work / f"{tag}.spec.json", work / f"{tag}.out.json"
        sp.write_text(json.dumps(spec))
        print(f"[correctness] {label} ...", flush=True)
        res = run_subprocess(
            [str(peer_python(args.peers_dir, peer)), str(DRIVER), str(sp), str(op)], op, args.timeout, label
        )
        if "eval" not in res:
            return {"error": res.get("error")}
        curve = []
        for row in res["eval"]:
            valid = np.array(row["dist"][0], dtype=np.float64)
            dist = np.append(valid, max(0.0, 1.0 - valid.sum()))[None]
            e = ev(dist / dist.sum())
            curve.append(
                {
                    "iteration": row["step"],
                    "exploitability": e.mean_exploitability,
                    "kl_target": e.mean_kl_target,
                    "invalid_mass": e.mean_invalid_mass,
                }
            )
        print(
            f"[correctness] {label}: expl {curve[0]['exploitability']:.3f} -> {curve[-1]['exploitability']:.3f}, "
            f"KL {curve[0]['kl_target']:.3g} -> {curve[-1]['kl_target']:.3g}",
            flush=True,
        )
        return {
            "curve": curve,
            "final": curve[-1],
            "train_s": res.get("train_s"),
            "trl": res.get("trl"),
            "second_half_mean": {k: tail_mean(curve, k) for k in ("exploitability", "kl_target")},
        }

    # ---- RPS (intransitive): nashalign, theory mixture vs TRL's default 0.5 (TRL >= 1.1 cannot express it).
    rps_task = task_for("rps", "<s>Rock, paper or scissors?", ("rock", "paper", "scissors"), rps_mu)
    rps_dir = work / "rps-model"
    build_tiny_policy(rps_task, seed=0, out_dir=str(rps_dir))
    mu_lm = response_distribution(CausalLMPolicy.from_pretrained(str(rps_dir), use_chat_template=False), rps_task)
    rps = {"mu_lm": mu_lm[0].round(4).tolist(), "fixed_points_lm_mu": lm_fixed_points(rps_task, mu_lm), "runs": {}}
    reg = dict(
        k=4,
        opponent_samples=2,
        epochs=4,
        minibatch_size=64,
        learning_rate=1e-3,
        lr_scheduler="linear",
        estimator="opponent",
    )
    runs = [
        ("nashalign NashMD (theory mixture eta*tau=0.05)", get_algorithm("nash_md", eta=0.5, tau=tau), reg),
        ("nashalign NashMD(mixture=0.5) = TRL default", get_algorithm("nash_md", eta=0.5, tau=tau, mixture=0.5), reg),
    ]
    pg = dict(k=2, opponent_samples=1, epochs=1, minibatch_size=B, learning_rate=1e-3, estimator="opponent")
    runs.append(
        (
            "nashalign NashMD(mixture=0.5, form=pg), TRL's sampling (k=2, 1 epoch)",
            get_algorithm("nash_md", eta=0.5, tau=tau, mixture=0.5, form="pg"),
            pg,
        )
    )
    for label, alg, cfg in runs:
        curve = run_nashalign(rps_task, str(rps_dir), alg, rps_task.oracle(), cfg, "rps-" + label.split()[1])
        rps["runs"][label] = {
            "curve": curve,
            "final": curve[-1],
            "second_half_mean": {k: tail_mean(curve, k) for k in ("exploitability", "kl_target")},
        }
    judge = {
        "kind": "judge",
        "classes": {rps_task.prompts[0]: list(rps_task.responses[0])},
        "matrices": {rps_task.prompts[0]: rps_task.matrices[0].tolist()},
    }
    res = run_trl(
        "trl100", rps_task, rps_dir, judge, True, "TRL 1.0.0 NashMDTrainer(mixture_coef=0.5) + judge, patched"
    )
    if res is not None and "curve" in res:
        rps["runs"]["TRL 1.0.0 NashMDTrainer(mixture_coef=0.5), pairwise judge, mixture-cache patch"] = res
    elif res is not None:
        rps["trl_error"] = res["error"]
    out["rps"] = rps

    # ---- Transitive (Bradley-Terry, rewards 0/1/2): TRL 1.13's NashMDTrainer itself vs nashalign.
    scores = {"one": 0.0, "two": 1.0, "three": 2.0}
    invalid = -20.0
    tr_task = task_for("transitive", "<s>Pick a number:", ("one", "two", "three"), (0.55, 0.3, 0.15))
    tr_dir = work / "transitive-model"
    build_tiny_policy(tr_task, seed=0, out_dir=str(tr_dir))
    pol = CausalLMPolicy.from_pretrained(str(tr_dir), use_chat_template=False)
    mu_tr = response_distribution(pol, tr_task)
    trans = {"mu_lm": mu_tr[0].round(4).tolist(), "fixed_points_lm_mu": lm_fixed_points(tr_task, mu_tr), "runs": {}}
    oracle = RewardModelOracle(lambda ps, rs: [scores.get(r.strip(), invalid) for r in rs], name="class reward")
    for label, alg in (
        ("nashalign NashMD (theory mixture)", get_algorithm("nash_md", eta=0.5, tau=tau)),
        (
            "nashalign NashMD(mixture=0.5, form=pg), TRL's sampling (k=2, 1 epoch)",
            get_algorithm("nash_md", eta=0.5, tau=tau, mixture=0.5, form="pg"),
        ),
    ):
        cfg = pg if "pg" in label else {**reg, "epochs": 4}
        curve = run_nashalign(tr_task, str(tr_dir), alg, oracle, cfg, "transitive-" + label.split()[1])
        trans["runs"][label] = {
            "curve": curve,
            "final": curve[-1],
            "second_half_mean": {k: tail_mean(curve, k) for k in ("exploitability", "kl_target")},
        }
    reward = {"kind": "class", "scores": {tr_task.prompts[0]: scores}, "invalid": invalid}
    for patch in (True, False):
        what = "with the mixture-cache patch" if patch else "as installed"
        res = run_trl("trl113", tr_task, tr_dir, reward, patch, f"TRL 1.13 NashMDTrainer(mixture_coef=0.5), {what}")
        if res is not None and "curve" in res:
            trans["runs"][f"TRL {res['trl']} NashMDTrainer(mixture_coef=0.5), reward model, {what}"] = res
        elif res is not None:
            trans[f"trl_error ({what})"] = res["error"]
    out["transitive"] = trans
    return out


def plot(corr: dict[str, Any], path: Path) -> None:
    """Log-scale curves; dashed lines = exact fixed points (KL axes floored at 1e-3: the theory's is ~0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    panels = [
        (axes[0], "rps", "exploitability", "RPS prompt (intransitive): exploitability"),
        (axes[1], "rps", "kl_target", "RPS prompt: KL(pi*_tau || pi)"),
        (axes[2], "transitive", "kl_target", "transitive prompt (Bradley-Terry): KL(pi*_tau || pi)"),
    ]
    for ax, game, key, title in panels:
        floor = 1e-3 if key == "kl_target" else 1e-2
        for (label, run), c in zip(corr[game]["runs"].items(), colors):
            xs = [r["iteration"] for r in run["curve"]]
            ax.plot(xs, [max(r[key], floor) for r in run["curve"]], "o-", ms=3, color=c, label=label)
        for (fp, val), c in zip(corr[game]["fixed_points_lm_mu"].items(), ("k", "tab:red")):
            ax.axhline(max(val[key], floor), color=c, ls="--", lw=1.2, label=f"exact fixed point: {fp}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_xlabel("iteration (TRL: optimizer step)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# =============================================================================================== report
def fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{nd}g}"


def tables(record: dict[str, Any]) -> str:
    lines = []
    gpu = record["args"]["device"] == "cuda"
    mem_key = "peak_cuda_mb" if gpu else "peak_rss_mb"
    for model, block in record["throughput"].items():
        info = block["model"]
        lines.append(
            f"### Throughput: {model} model ({info['arch']}, {info['parameters'] / 1e6:.2f} M parameters), "
            f"{record['args']['device']}, batch {record['args']['batch']} prompts, "
            f"{record['args']['max_new_tokens']} new tokens"
        )
        lines.append("")
        lines.append(
            "| group | side | trainer | completions/step | samples/s | opt. steps/s | prompts/s | "
            f"peak {'CUDA' if gpu else 'RSS'} MB | RSS before train MB |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in block["results"]:
            if "error" in r:
                lines.append(f"| {r['group']} | {r['side']} | {r['label']} | error: {str(r['error'])[:60]} | | | | | |")
                continue
            per = r.get("completions_per_iteration") or r.get("completions_per_step")
            lines.append(
                f"| {r['group']} | {r['side']} | {r['label']} | {per} | {fmt(r['samples_per_s'])} | "
                f"{fmt(r['steps_per_s'])} | {fmt(r['prompts_per_s'])} | {fmt(r.get(mem_key), 4)} | "
                f"{fmt(r.get('rss_before_train_mb'), 4)} |"
            )
        lines.append("")
        lines.append("| ratio nashalign / TRL | samples/s | opt. steps/s | prompts/s | peak memory |")
        lines.append("|---|---|---|---|---|")
        for row in block["ratios"]:
            lines.append(
                f"| {row['pair']} | {fmt(row['samples_per_s'])} | {fmt(row['steps_per_s'])} | "
                f"{fmt(row['prompts_per_s'])} | {fmt(row['memory'])} |"
            )
        lines.append("")
        lines.append("Where the time goes (seconds per step/iteration, best window):")
        lines.append("")
        for r in block["results"]:
            parts = r.get("seconds_per_iteration_by_part") or r.get("seconds_per_step_by_part")
            if parts:
                lines.append(f"- {r['side']} {r['label']}: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
        lines.append("")
    if not gpu:
        lines.append(
            "GPU (~0.5B-parameter model, bf16, one H100): not measured: no GPU "
            "(run `--device cuda --model 0.5b` where one is lent)."
        )
        lines.append("")
    corr = record.get("correctness")
    if corr:
        lines.append(f"### Correctness: exact metrics on the known-equilibrium LM benchmark (tau = {corr['tau']})")
        lines.append("")
        lines.append(
            "| prompt | run | exploitability (final) | KL(pi*_tau‖pi) (final) | "
            "exploitability (2nd-half mean) | KL (2nd-half mean) |"
        )
        lines.append("|---|---|---|---|---|---|")
        for name in ("rps", "transitive"):
            block = corr[name]
            for label, val in block["fixed_points_lm_mu"].items():
                lines.append(
                    f"| {name} | exact fixed point, {label} (LM's mu) | {fmt(val['exploitability'])} | "
                    f"{fmt(val['kl_target'])} | | |"
                )
            for label, run in block["runs"].items():
                f, h = run["final"], run["second_half_mean"]
                lines.append(
                    f"| {name} | {label} | {fmt(f['exploitability'])} | {fmt(f['kl_target'])} | "
                    f"{fmt(h['exploitability'])} | {fmt(h['kl_target'])} |"
                )
        fps = corr["tabular_rps"]["fixed_points"]
        lines.append(
            f"| rps, tabular mu={tuple(corr['tabular_rps']['mu'])} | exact fixed points (SPEC.md 12(d)) | "
            + " / ".join(f"{k}: {v['exploitability']:.3f}" for k, v in fps.items())
            + " | "
            + " / ".join(f"{k}: {v['kl_target']:.3g}" for k, v in fps.items())
            + " | | |"
        )
        lines.append("")
    return "\n".join(lines)


def ratios(results: list[dict]) -> list[dict]:
    by = {(r["side"], r["label"]): r for r in results if "samples_per_s" in r}
    pairs = [
        (("nashalign", "nash_md (regression)"), ("trl113", "NashMDTrainer")),
        (("nashalign", "nash_md (pg)"), ("trl113", "NashMDTrainer")),
        (("nashalign", "online_ipo"), ("trl116", "OnlineDPOTrainer(ipo)")),
        (("nashalign", "egpo"), ("trl116", "OnlineDPOTrainer(ipo)")),
    ]
    out = []
    for a, b in pairs:
        if a in by and b in by:
            x, y = by[a], by[b]
            mem = "peak_cuda_mb" if x.get("peak_cuda_mb") else "peak_rss_mb"
            out.append(
                {
                    "pair": f"{a[1]} / TRL {b[1]}",
                    **{k: x[k] / y[k] for k in ("samples_per_s", "steps_per_s", "prompts_per_s")},
                    "memory": x[mem] / y[mem],
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and iterations (a few minutes)")
    ap.add_argument("--skip-install", action="store_true", help="use existing peer venvs only")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument(
        "--model", default=None, help="comma list of tiny, small, 0.5b (default: tiny,small on CPU, 0.5b on cuda)"
    )
    ap.add_argument("--peers-dir", type=Path, default=HERE / ".peers")
    ap.add_argument("--batch", type=int, default=8, help="prompts per optimizer step (per device)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--steps", type=int, default=None, help="steps per timing window (3 windows)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on each side (CPU)")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--no-correctness", action="store_true")
    ap.add_argument("--write", action="store_true", help="write into benchmarks/results/ (replace the committed results)")
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.update(OFFLINE)
    if args.worker:
        run_worker(*args.worker)
        return
    import common

    models = (args.model or ("0.5b" if args.device == "cuda" else "tiny,small")).split(",")
    if args.steps is None:
        args.steps = 2 if args.quick else 4
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible to torch.")
    args.peers_dir = args.peers_dir.resolve()
    args.peers_dir.mkdir(parents=True, exist_ok=True)
    record = common.header("llm_peers", ["transformers", "accelerate", "peft"])
    record["uptime_start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    record["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"}
    peers = {}
    for name in PEERS:
        peers[name] = setup_peer(args.peers_dir, name, args.skip_install)
        print(f"[peers] {name}: {peers[name]['status']} {peers[name].get('versions', '')}", flush=True)
    record["peers"] = peers
    work = Path(tempfile.mkdtemp(prefix="nashalign-llm-peers-"))
    prompts = make_prompts()
    record["throughput"] = {}
    try:
        for m in models:
            info, results = throughput(args, peers, work, m, prompts)
            record["throughput"][m] = {"model": info, "results": results, "ratios": ratios(results)}
        if not args.no_correctness:
            record["correctness"] = correctness(args, peers, work)
            png = common.results_dir(args.write) / "llm_peers-correctness.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            plot(record["correctness"], png)
            record["correctness"]["plot"] = str(png.relative_to(common.REPO))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    md = tables(record)
    machine = common.machine_slug() + ("-cuda" if args.device == "cuda" else "")
    js, mdp = common.write("llm_peers", machine, record, "# LLM trainers side by side with TRL\n\n" + md, publish=args.write)
    print(f"\nwrote {js.relative_to(common.REPO)} and {mdp.relative_to(common.REPO)}\n")
    print(md)


if __name__ == "__main__":
    main()
