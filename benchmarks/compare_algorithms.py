"""Every registered algorithm on EGPO's exact tabular comparison, at beta in {0.1, 0.01, 0.001}.

The setup of ``+experiment=egpo_tabular`` (SPEC.md 5.4; tabular/README.md): one batched random game, N = 10
responses, 10 contexts = 10 independent games (seed 2025), reference logits ~ N(0, 1), every policy started
at the reference, and the EGPO repo's step sizes: (beta, iters, lr) = (0.1, 1000, 0.1), (0.01, 5000, 0.02),
(0.001, 1e5, 2e-4), mapped to a mirror step ``eta = 4 lr/(N beta)`` (``eta = lr`` for the gradient-step rule,
online IPO).  The script iterates over the registry (:data:`nashalign.algorithms.ALGORITHMS`), so algorithms
added later are picked up: each is built with ``eta`` as above, ``tau = beta`` (``tau = 0`` for the
unregularised rules, ``tau_rule == "zero"``) and its own defaults for anything else.

Measured, for the last iterate: the regularised duality gap ``DG_beta = 2 tau KL(pi || BR_beta(pi))`` at
``tau = beta`` (median and max over the 10 games) after the repo's iterations, and the first recorded
iteration at which the max over the games is <= 1e-6 ("-" if never).  Unregularised rules target the Nash
equilibrium, not ``pi*_beta``, and RSPO (forward KL) its own regularised game: their DG_beta need not vanish.
A rule that cannot be built with these settings (e.g. ``eta tau > 1``) or whose step raises is listed with
the error.

    python benchmarks/compare_algorithms.py            # prints the table (about 5 minutes on 2 cores)
    python benchmarks/compare_algorithms.py --write    # also overwrites benchmarks/results/compare_algorithms.json
    python benchmarks/compare_algorithms.py --quick    # 1/10 of the iterations, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from nashalign import games  # noqa: E402
from nashalign.algorithms import ALGORITHMS, get_algorithm  # noqa: E402
from nashalign.metrics import reg_expl_logp  # noqa: E402
from nashalign.solve import exact_signal  # noqa: E402

CONFIGS = [(0.1, 1000, 0.1), (0.01, 5000, 0.02), (0.001, 100_000, 2e-4)]  # the EGPO repo's (beta, iters, lr)
N, C, SEED = 10, 10, 2025
TARGET = 1e-6


def build(name: str, beta: float, lr: float) -> tuple[Any, dict[str, float]]:
    cls = ALGORITHMS[name]
    eta = lr if cls.lift == "gradient_step" else 4.0 * lr / (N * beta)
    hp = {"eta": eta, "tau": 0.0 if cls.tau_rule == "zero" else beta}
    return get_algorithm(name, **hp), hp


def run_one(name: str, beta: float, iters: int, lr: float, game: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"algorithm": name, "beta": beta, "iters": iters, "lr": lr}
    try:
        alg, hp = build(name, beta, lr)
    except (ValueError, TypeError) as e:
        return {**row, "error": f"not built: {e}"}
    row.update({"eta": hp["eta"], "tau": hp["tau"], "hyperparameters": alg.hyperparameters()})
    every = max(1, iters // 200)
    st = alg.init(game.log_ref.copy(), game.log_ref)
    hit, curve, start = None, [], time.perf_counter()
    try:
        for t in range(1, iters + 1):
            for ph in range(alg.phases):
                st = alg.update(st, exact_signal(game.P, alg.opponents(st, ph)), ph)
            if t % every == 0 or t == iters:
                dg = 2.0 * reg_expl_logp(game.P, st.logp, game.log_ref, beta)
                curve.append([t, float(np.max(dg))])
                if hit is None and np.max(dg) <= TARGET:
                    hit = t
    except (ValueError, FloatingPointError) as e:
        return {**row, "error": f"step {t}: {e}", "seconds": time.perf_counter() - start, "curve_max_dg": curve}
    dg = 2.0 * reg_expl_logp(game.P, st.logp, game.log_ref, beta)
    return {
        **row,
        "dg_median": float(np.median(dg)),
        "dg_max": float(np.max(dg)),
        "iters_to_1e-6": hit,
        "record_every": every,
        "seconds": time.perf_counter() - start,
        "curve_max_dg": curve,
    }


def fmt(x: float) -> str:
    return "~0" if x < 1e-12 else f"{x:.2g}"


def table(rows: list[dict[str, Any]]) -> str:
    names = sorted({r["algorithm"] for r in rows})
    betas = [c[0] for c in CONFIGS if any(r["beta"] == c[0] for r in rows)]
    head = "| algorithm | " + " | ".join(f"beta = {b}: median / max DG, iters to 1e-6" for b in betas) + " |"
    lines = [head, "|---|" + "---|" * len(betas)]
    for n in names:
        cells = []
        for b in betas:
            r = next(r for r in rows if r["algorithm"] == n and r["beta"] == b)
            if "error" in r:
                where, _, why = r["error"].partition(": ")
                cells.append(f"raises at {where}: {why.split(';')[0].split('(')[0].strip()}")
            else:
                hit = r["iters_to_1e-6"]
                cells.append(f"{fmt(r['dg_median'])} / {fmt(r['dg_max'])}, {hit if hit is not None else '-'}")
        zero = ALGORITHMS[n].tau_rule == "zero"
        lines.append(f"| {n}{' (tau = 0)' if zero else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dump(record: dict[str, Any]) -> str:
    """JSON with the header indented and one compact line per row (the curves make rows long)."""
    head = json.dumps({k: v for k, v in record.items() if k != "rows"}, indent=1, default=str)
    rows = ",\n  ".join(json.dumps(r, default=str, separators=(",", ":")) for r in record["rows"])
    return head[:-2] + ',\n "rows": [\n  ' + rows + "\n ]\n}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="overwrite benchmarks/results/compare_algorithms.json/.md")
    ap.add_argument("--quick", action="store_true", help="1/10 of the iterations (smoke test; never written)")
    ap.add_argument("--only", default="", help="comma-separated algorithm names (default: the whole registry)")
    args = ap.parse_args()
    game = games.random_game(N, num_contexts=C, seed=SEED, ref="random")
    names = [n for n in sorted(ALGORITHMS) if not args.only or n in args.only.split(",")]
    rows = []
    for beta, iters, lr in CONFIGS:
        iters = max(10, iters // 10) if args.quick else iters
        for name in names:
            r = run_one(name, beta, iters, lr, game)
            rows.append(r)
            status = r.get("error") or f"DG median {r['dg_median']:.2g} max {r['dg_max']:.2g} hit {r['iters_to_1e-6']}"
            print(f"beta={beta} {name:12s} {status[:120]}  ({r.get('seconds', 0):.1f} s)", flush=True)
    md = table(rows)
    print(md)
    if args.write and not args.quick:
        record = {**common.header("compare_algorithms", []), "setup": {"N": N, "contexts": C, "seed": SEED,
                  "configs": CONFIGS, "target": TARGET}, "rows": rows}
        out = common.RESULTS / "compare_algorithms.json"
        out.write_text(dump(record))
        (common.RESULTS / "compare_algorithms.md").write_text(md + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
