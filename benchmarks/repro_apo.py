"""APO's acceleration claim, measured: iterations to a target with Nesterov momentum vs SPPO (= APO, alpha = 0).

He, Yuan and Gu (arXiv 2410.06293) show that extrapolating the proximal iterates,
``pi_{t+1} ∝ pi_hat_{t+1} (pi_hat_{t+1}/pi_hat_t)^alpha``, speeds up iterative DPO/SPPO; for a fixed
reward the log-policy's velocity tends to ``r / (beta (1 - alpha))``, so the expected speed-up is about
``1/(1 - alpha)``.  Two settings, exact win rates, every policy started at the reference, ``eta = 0.5``:

(a) transitive (Bradley-Terry) games, the DPO setting of the theory: 10 contexts x 10 responses, rewards
    ~ N(0, 1); metric: iterations until the last iterate's exploitability ``max_y P(y > pi) - 1/2`` (max over
    contexts) is below 1e-2 and 1e-4;
(b) intransitive random games (the EGPO setup, seed 2025): the last iterate's and the average iterate's
    exploitability after 2000 iterations, and iterations until the average's is below 1e-2.

    python benchmarks/repro_apo.py            # prints the tables (under a minute)
    python benchmarks/repro_apo.py --write    # also overwrites benchmarks/results/repro_apo.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from nashalign import games, solve  # noqa: E402

ALPHAS = [0.0, 0.3, 0.5, 0.7, 0.9]
ETA, N, C = 0.5, 10, 10


def first_below(history: Any, col: str, level: float) -> int | None:
    steps, vals = np.asarray(history["step"]), np.asarray(history[col])
    hit = np.nonzero(vals <= level)[0]
    return int(steps[hit[0]]) if hit.size else None


def transitive(steps: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    game = games.bradley_terry(rng.normal(size=(C, N)), ref=np.full((C, N), 1 / N))
    rows = []
    for a in ALPHAS:
        res = solve(game, "apo", eta=ETA, tau=0.0, alpha=a, steps=steps, record_every=1, target=None)
        h = res.history
        rows.append({"alpha": a, "to_1e-2": first_below(h, "expl_last", 1e-2), "to_1e-4": first_below(h, "expl_last", 1e-4),
                     "expl_last_final": float(h.last("expl_last"))})
    base = rows[0]
    for r in rows:
        for k in ("to_1e-2", "to_1e-4"):
            r[f"speedup_{k}"] = (base[k] / r[k]) if (base[k] and r[k]) else None
        r["predicted_speedup"] = 1.0 / (1.0 - r["alpha"])
    return rows


def intransitive(steps: int) -> list[dict[str, Any]]:
    game = games.random_game(N, num_contexts=C, seed=2025, ref="random")
    rows = []
    for a in ALPHAS:
        try:
            res = solve(game, "apo", eta=ETA, tau=0.0, alpha=a, steps=steps, record_every=10, target=None)
        except (ValueError, FloatingPointError) as e:
            rows.append({"alpha": a, "error": str(e)})
            continue
        h = res.history
        rows.append({"alpha": a, "expl_last": float(h.last("expl_last")), "expl_avg": float(h.last("expl_avg")),
                     "avg_to_1e-2": first_below(h, "expl_avg", 1e-2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    a = transitive(3000)
    b = intransitive(2000)
    ta = common.markdown_table(
        [{"alpha": r["alpha"], "iters to expl 1e-2": r["to_1e-2"], "iters to expl 1e-4": r["to_1e-4"],
          "speed-up (1e-4)": f"{r['speedup_to_1e-4']:.2f}" if r["speedup_to_1e-4"] else "-",
          "1/(1-alpha)": f"{r['predicted_speedup']:.2f}"} for r in a],
        ["alpha", "iters to expl 1e-2", "iters to expl 1e-4", "speed-up (1e-4)", "1/(1-alpha)"])
    tb = common.markdown_table(
        [{"alpha": r["alpha"], **({"error": r["error"][:80]} if "error" in r else {
            "last-iterate expl": f"{r['expl_last']:.3g}", "average expl": f"{r['expl_avg']:.3g}",
            "iters to avg expl 1e-2": r["avg_to_1e-2"]})} for r in b],
        ["alpha", "last-iterate expl", "average expl", "iters to avg expl 1e-2"])
    print("(a) Bradley-Terry games, last iterate\n" + ta + "\n\n(b) random intransitive games, 2000 iterations\n" + tb)
    if args.write:
        rec = {**common.header("repro_apo", []), "eta": ETA, "transitive": a, "intransitive": b}
        (common.RESULTS / "repro_apo.json").write_text(json.dumps(rec, indent=1, default=str))
        (common.RESULTS / "repro_apo.md").write_text(ta + "\n\n" + tb + "\n")


if __name__ == "__main__":
    main()
