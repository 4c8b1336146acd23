"""Memory and throughput of the LLM trainer, per algorithm, under full fine-tuning and LoRA.

For each registered algorithm and each mode (``full`` / ``lora``), a few iterations of
:class:`nashalign.llm.trainer.NashTrainer` on a model built from config, measuring:

* ``peak_mb``: peak accelerator memory (``torch.cuda.max_memory_allocated``, reset per run) on a GPU; on the
  CPU, the megabytes of model-sized tensors held on the device at the peak (the whole policy, a LoRA base
  included, the reference copy, the optimizer state and any on-device bank slot), since the RSS only grows;
* ``samples_per_s``: generated responses per second of generation time; ``iter_s``: seconds per iteration;
* ``fwd_per_sample``: sequence forwards (scoring passes of the policy and the reference, gradient passes
  included) per generated response;
* ``dev_copies`` / ``host_copies``: parameter-sized copies held at the peak, in units of the TRAINABLE
  parameter count (the adapter under LoRA): on the device the policy's trainable weights (1), the frozen
  reference copy (full FT: 1 trainable-size copy, LoRA: 0 -- the adapter-off base), the optimizer state
  (2 for Adam); in the opponent bank the opponents, ``theta_{t-1}`` of APO/MNPO, the prox centre of
  MPO/COMAL/Nash-Prox (re-centred every iteration here) and ``theta_t`` of EGPO/ONPO/COMAL with its optimizer state
  (``opponent_offload``: on the host).

    python benchmarks/bench_llm_memory.py --model tiny                   # CPU, prints the table
    python benchmarks/bench_llm_memory.py --model tiny small --write     # also results/llm_memory-<machine>.json
    python benchmarks/bench_llm_memory.py --model qwen0p5b --device cuda --dtype bfloat16 --write   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import torch  # noqa: E402

MODELS = {
    # name: build_scratch_policy kwargs (qwen2-shaped, random weights, a locally trained tokenizer)
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=2048),
    # Qwen2-0.5B's shape (24 layers, 896 hidden, 14/2 heads) with an 8k vocabulary: ~0.36B parameters.
    "qwen0p5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, vocab_size=8192),
}
PROMPTS = [f"Question {i}: name a colour, a number and an animal." for i in range(64)]


def tensors_mb(tensors: list[torch.Tensor]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def build(model: str, mode: str, device: str, dtype: str | None) -> Any:
    from nashalign.llm.tiny import build_scratch_policy

    lora = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"} if mode == "lora" else None
    return build_scratch_policy(PROMPTS, arch="qwen2", dtype=dtype, device=device, seed=0, lora=lora,
                                tie_word_embeddings=True, max_position_embeddings=512, **MODELS[model])


def run_one(name: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from nashalign.algorithms import ALGORITHMS, get_algorithm
    from nashalign.llm._decode import HFSampler
    from nashalign.llm.opponents import OpponentBank
    from nashalign.llm.trainer import NashTrainer, TrainerConfig

    cls = ALGORITHMS[name]
    hp = {"every": 1} if hasattr(cls, "recentres_at") else {}  # prox rules: the centre slot is used from t = 1
    alg = get_algorithm(name, eta=0.5, tau=0.0 if cls.tau_rule == "zero" else 0.1, **hp)
    policy = build(args.model_name, mode, args.device, args.dtype)

    def oracle(prompts: Any, a: Any, b: Any) -> torch.Tensor:  # the longer response wins a little more often
        return torch.tensor([0.5 + 0.1 * ((len(x) > len(y)) - (len(x) < len(y))) for x, y in zip(a, b)])

    peak = {"bank_dev": 0.0, "bank_host": 0.0}
    counts = {"scored": 0, "generated": 0}
    store, store_opt = OpponentBank.store, OpponentBank.store_optimizer

    def note(bank: OpponentBank) -> None:
        c = bank.copies()
        peak["bank_dev"] = max(peak["bank_dev"], c["device"])
        peak["bank_host"] = max(peak["bank_host"], c["host"])

    OpponentBank.store = lambda self, slot: (store(self, slot), note(self))[0]
    OpponentBank.store_optimizer = lambda self, opt: (store_opt(self, opt), note(self))[0]
    scored = policy.sequence_logprobs

    def counting(samples: Any, **kw: Any) -> torch.Tensor:
        counts["scored"] += len(samples)
        return scored(samples, **kw)

    policy.sequence_logprobs = counting
    hf = HFSampler()

    def sampler(*a: Any, **kw: Any) -> Any:
        samples = hf(*a, **kw)
        counts["generated"] += len(samples)
        return samples
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainerConfig(
            iterations=args.iterations, prompts_per_iteration=args.prompts, k=2, max_new_tokens=args.tokens,
            epochs=1, minibatch_size=64, learning_rate=1e-5, cpu=args.device == "cpu", progress=False,
            track_win_rate=False, save_final_model=False, mixed_precision="bf16" if args.dtype else "no",
            gradient_checkpointing=args.gradient_checkpointing, output_dir=out,
        )
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer = NashTrainer(policy, alg, oracle, PROMPTS, cfg, sampler=sampler)
        start = time.perf_counter()
        history = trainer.train()
        seconds = time.perf_counter() - start
    OpponentBank.store, OpponentBank.store_optimizer = store, store_opt
    rows = [r for r in history if r["iteration"] > 0]
    trainable = [p for p in policy.model.parameters() if p.requires_grad]
    size = sum(p.numel() for p in trainable)
    opt_state = [v for st in trainer.optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.dim()]
    ref = policy._ref_model
    ref_copies = 0.0 if ref is None else sum(p.numel() for p in ref.parameters()) / size
    dev_copies = 1.0 + ref_copies + sum(v.numel() for v in opt_state) / size + peak["bank_dev"]
    everything = list(policy.model.parameters()) + opt_state + (list(ref.parameters()) if ref is not None else [])
    held = tensors_mb(everything)  # the whole policy (a LoRA base included), the reference, the optimizer state
    held += peak["bank_dev"] * tensors_mb(trainable)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else held
    gen_s = sum(r["generation_s"] for r in rows)
    return {
        "algorithm": name, "mode": mode, "model": args.model_name, "trainable_params": size,
        "peak_mb": round(peak_mb, 1), "samples_per_s": round(counts["generated"] / gen_s, 1) if gen_s else None,
        "iter_s": round(seconds / len(rows), 3),
        "fwd_per_sample": round(counts["scored"] / max(counts["generated"], 1), 2),
        "dev_copies": round(dev_copies, 2), "host_copies": round(peak["bank_host"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", choices=sorted(MODELS), default=["tiny"])
    ap.add_argument("--algorithms", nargs="+", default=None, help="default: every registered algorithm")
    ap.add_argument("--modes", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", default=None, help="e.g. bfloat16: bf16 weights (fp32 master weights, bf16 autocast)")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per iteration")
    ap.add_argument("--tokens", type=int, default=16, help="max new tokens")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--machine", default=None, help="name in the results file (default: CPU model and cores)")
    ap.add_argument("--write", action="store_true", help="write results/llm_memory-<machine>.json and .md")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from nashalign.algorithms import ALGORITHMS

    names = args.algorithms or sorted(ALGORITHMS)
    record = common.header("llm_memory", ["transformers", "accelerate", "peft"])
    record["settings"] = {k: v for k, v in vars(args).items() if k not in ("write", "machine")}
    rows = []
    for model in args.model:
        args.model_name = model
        for mode in args.modes:
            for name in names:
                row = run_one(name, mode, args)
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    record["rows"] = rows
    cols = ["model", "mode", "algorithm", "trainable_params", "peak_mb", "samples_per_s", "iter_s", "fwd_per_sample",
            "dev_copies", "host_copies"]
    table = common.markdown_table(rows, cols)
    print(table)
    if args.write:
        machine = args.machine or (f"cuda-{torch.cuda.get_device_name(0)}" if args.device == "cuda"
                                   else common.machine_slug())
        machine = "".join(c if c.isalnum() or c in "-_" else "-" for c in machine.lower())
        js, md = common.write("llm_memory", machine, record, "# LLM trainer memory and throughput\n\n" + table)
        print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
