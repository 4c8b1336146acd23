"""Loss + backward throughput of every registered algorithm's loss on a batch of sequence-pair log-probs.

For each algorithm in ``nashalign.algorithms.ALGORITHMS`` and each of its loss forms: ``alg.loss(LossInputs)``
on ``(B, 2)`` pairs of sequence log-probabilities (``B = 4096`` by default) that require grad, then
``loss.backward()``; float32 and bfloat16 inputs; CPU, and CUDA with ``--device cuda`` (synchronised only
around the timed loop).  Reports pairs per second (best of ``--repeat`` loops of ``--iters`` steps).
Prints a markdown table and writes ``benchmarks/results/losses-<machine>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import torch  # noqa: E402

from nashalign.algorithms import ALGORITHMS, LossInputs, get_algorithm  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def build(name: str, form: str) -> Any:
    cls = ALGORITHMS[name]
    tau = 0.0 if cls.tau_rule == "zero" else 0.1
    kw = {"form": form} if len(cls.forms) > 1 or "form" in getattr(cls, "__dataclass_fields__", {}) else {}
    return get_algorithm(name, eta=1.0, tau=tau, **kw)


def inputs(batch: int, dtype: torch.dtype, device: str, seed: int = 0) -> tuple[LossInputs, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    anchor = -30.0 + 5.0 * torch.randn(batch, 2, generator=gen)  # sequence log-probs of two responses
    ref = anchor + 0.5 * torch.randn(batch, 2, generator=gen)
    pol = (anchor + 0.1 * torch.randn(batch, 2, generator=gen)).to(device=device, dtype=dtype).requires_grad_(True)
    u = torch.rand(batch, generator=gen)
    signal = torch.stack([u, 1.0 - u], dim=-1)  # P(y > y'), P(y' > y)
    conv = {"dtype": dtype, "device": device}
    return LossInputs(pol, anchor.to(**conv), ref.to(**conv), signal.to(**conv)), pol


def time_loss(alg: Any, inp: LossInputs, pol: torch.Tensor, iters: int, repeat: int, device: str) -> float:
    """Best seconds per loss+backward over ``repeat`` loops of ``iters`` steps."""

    def step() -> None:
        pol.grad = None
        alg.loss(inp).loss.backward()

    for _ in range(3):
        step()  # warm-up (kernel selection, allocator)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        best = min(best, (time.perf_counter() - t0) / iters)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4096, help="pairs per batch")
    ap.add_argument("--iters", type=int, default=50, help="loss+backward steps per timed loop")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many loops")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda adds CUDA columns")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    common.add_output_args(ap)  # --write / --machine: replace the committed results; default: outputs/benchmarks/
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"]
    if args.device == "cuda":
        if torch.cuda.is_available():
            devices.append("cuda")
        else:
            print("no CUDA device: skipping the CUDA columns", file=sys.stderr)
    machine = args.machine or common.machine_slug()
    rec = common.header("losses", [])
    rec["settings"] = vars(args)
    rows, table = [], []
    for name in sorted(ALGORITHMS):
        for form in ALGORITHMS[name].forms:
            alg = build(name, form)
            line: dict[str, Any] = {"algorithm": name, "form": form}
            for dev in devices:
                for dname, dt in DTYPES.items():
                    key = f"{dev} {dname}"
                    try:
                        inp, pol = inputs(args.batch, dt, dev)
                        if dev == "cuda":
                            torch.cuda.set_sync_debug_mode("warn")  # flag any host sync inside the loss
                        sec = time_loss(alg, inp, pol, args.iters, args.repeat, dev)
                        rows.append({"algorithm": name, "form": form, "device": dev, "dtype": dname, "seconds": sec, "pairs_per_second": args.batch / sec})
                        line[key] = f"{args.batch / sec / 1e6:.3g}M ({common.fmt_s(sec)})"
                    except Exception as e:  # a loss that rejects a dtype is a result, not a crash
                        rows.append({"algorithm": name, "form": form, "device": dev, "dtype": dname, "error": f"{type(e).__name__}: {e}"})
                        line[key] = f"error: {type(e).__name__}"
                    finally:
                        if dev == "cuda":
                            torch.cuda.set_sync_debug_mode("default")
            table.append(line)
            print(f"{name} {form}: {line}", file=sys.stderr, flush=True)
    rec["results"] = rows
    cols = ["algorithm", "form"] + [f"{d} {n}" for d in devices for n in DTYPES]
    md = (
        f"Loss + backward, {args.batch} pairs of sequence log-probs per batch: pairs per second (time per step). "
        f"Machine: {rec['machine']['cpu']}, {rec['machine']['cores']} cores, torch threads {rec['machine']['torch_threads']}, "
        f"load average {rec['load_average_start']}; CUDA: {rec['machine']['cuda'].get('name', 'no CUDA device')}.\n\n"
        + common.markdown_table(table, cols)
    )
    if not args.no_write:
        js, mdp = common.write("losses", machine, rec, md, publish=common.publishing(args))
        print(f"wrote {js} and {mdp}", file=sys.stderr)
    print(md)


if __name__ == "__main__":
    main()
