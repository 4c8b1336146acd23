"""Which equilibrium do the last-iterate methods reach when it is not unique?  (arXiv 2512.24818's setting.)

Games with a continuum of Nash equilibria, made by duplicating responses (a copy has the same row and column
of ``P`` as its original, so any split of mass between them is an equilibrium):

* ``rps_dup``: rock-paper-scissors with rock duplicated, ``[R, R', P, S]``; equilibria
  ``{pi(R) + pi(R') = 1/3, pi(P) = pi(S) = 1/3}``, maximum-entropy one ``(1/6, 1/6, 1/3, 1/3)``;
* ``random_dup``: 5 random games (N = 6, uniform reference), in each the two responses with the largest
  equilibrium mass duplicated (N = 8).

Step sizes: eta = 0.5 on rps_dup, 2.0 on random_dup (OMWU's linear phase is much slower at smaller steps
there).  Every method starts from the same asymmetric policy (``[0.4, 0.1, 0.3, 0.2]`` on rps_dup; Dirichlet(1) on the
random games) with ``tau = 0`` unless stated; ``egpo (tau=0.01)`` converges to ``pi*_tau``, which for a
uniform reference tends to the maximum-entropy equilibrium as ``tau -> 0``.  Measured after ``T`` iterations: the last iterate's
exploitability, its linear rate (fitted slope of log10 expl over the second half, decades per 1000
iterations), the L1 distance of the last iterate (average iterate for MWU) to the maximum-entropy
equilibrium (cvxpy, entropy maximised over the equilibrium polytope ``P pi <= 1/2``) and to the LP's
equilibrium (``nashalign.solve_nash``), and the ratio ``pi(copy)/pi(original)`` at the end and at the start.

    python benchmarks/repro_multi_equilibria.py            # prints the table (about a minute)
    python benchmarks/repro_multi_equilibria.py --write    # also overwrites benchmarks/results/repro_multi_equilibria.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import cvxpy as cp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from nashalign import PreferenceGame, games, solve, solve_nash  # noqa: E402

T = 4000
METHODS = [  # (label, algorithm, hyperparameters, which iterate is reported)
    ("omwu", "omwu", {"eta": 0.5, "tau": 0.0}, "last"),
    ("egpo (tau=0)", "egpo", {"eta": 0.5, "tau": 0.0}, "last"),
    ("apo (alpha=0.3)", "apo", {"eta": 0.5, "tau": 0.0, "alpha": 0.3}, "last"),
    ("mwu (average)", "mwu", {"eta": 0.5, "tau": 0.0}, "average"),
    ("egpo (tau=0.01)", "egpo", {"eta": 0.5, "tau": 0.01}, "last"),
]


def duplicate(P: np.ndarray, copies: list[int]) -> np.ndarray:
    """``P`` over ``[0..n-1] + copies`` (each copy is a clone of its original); ``(C, n', n')``."""
    ix = list(range(P.shape[-1])) + list(copies)
    return P[:, ix][:, :, ix]


def max_entropy_nash(P: np.ndarray) -> np.ndarray:
    """The maximum-entropy Nash equilibrium of each context (cvxpy: max H(pi) s.t. P pi <= 1/2, pi in the simplex)."""
    out = []
    for Pc in P:
        x = cp.Variable(Pc.shape[0], nonneg=True)
        prob = cp.Problem(cp.Maximize(cp.sum(cp.entr(x))), [cp.sum(x) == 1, Pc @ x <= 0.5 + 1e-9])
        prob.solve(solver="CLARABEL")
        out.append(np.clip(x.value, 0, None) / np.clip(x.value, 0, None).sum())
    return np.array(out)


def rate(history: Any, col: str) -> float:
    steps, vals = np.asarray(history["step"], float), np.asarray(history[col], float)
    half = steps >= steps[-1] / 2
    vals = np.maximum(vals[half], 1e-300)
    return float(np.polyfit(steps[half], np.log10(vals), 1)[0] * 1000)


def study(name: str, game: PreferenceGame, init: np.ndarray, pairs: list[list[tuple[int, int]]], steps: int,
          eta: float) -> list[dict[str, Any]]:
    ment = max_entropy_nash(np.asarray(game.P))
    lp = np.asarray(solve_nash(game))
    rows = []
    for label, alg, hp, which in METHODS:
        res = solve(game, alg, steps=steps, init=init, record_every=steps // 200, target=None, **{**hp, "eta": eta})
        pi = np.asarray(res.last if which == "last" else res.average)
        col = "expl_last" if which == "last" else "expl_avg"
        rows.append({
            "game": name, "method": label, "iterate": which, "T": steps, "eta": eta,
            "expl": float(res.history.last(col)),
            "rate_decades_per_1000": rate(res.history, col),
            "l1_to_max_entropy": float(np.abs(pi - ment).sum(-1).max()),
            "l1_to_lp": float(np.abs(pi - lp).sum(-1).max()),
            "copy_ratio_end": [float(pi[c, j] / pi[c, i]) for c in range(pi.shape[0]) for i, j in pairs[c]],
            "copy_ratio_start": [float(init[c, j] / init[c, i]) for c in range(init.shape[0]) for i, j in pairs[c]],
        })
    rows.append({"game": name, "method": "LP (solve_nash)", "l1_to_max_entropy": float(np.abs(lp - ment).sum(-1).max())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rps = games.rock_paper_scissors()
    g1 = PreferenceGame(duplicate(np.asarray(rps.P), [0]))
    init1 = np.array([[0.4, 0.1, 0.3, 0.2]])
    base = games.random_game(6, num_contexts=5, seed=7)
    top = np.argsort(-np.asarray(solve_nash(base)), axis=-1)[:, :2]  # (5, 2): the largest equilibrium masses
    P2 = np.stack([duplicate(np.asarray(base.P)[c : c + 1], list(top[c]))[0] for c in range(5)])
    g2 = PreferenceGame(P2)
    init2 = np.random.default_rng(1).dirichlet(np.ones(8), size=5)
    pairs2 = [[(int(top[c, 0]), 6), (int(top[c, 1]), 7)] for c in range(5)]
    rows = study("rps_dup", g1, init1, [[(0, 3)]], T, 0.5) + study("random_dup", g2, init2, pairs2, 5 * T, 2.0)
    table = common.markdown_table(
        [{**r, "expl": f"{r['expl']:.2g}" if "expl" in r else "",
          "rate": f"{r['rate_decades_per_1000']:.2f}" if "rate_decades_per_1000" in r else "",
          "L1 to max-entropy NE": f"{r['l1_to_max_entropy']:.3g}",
          "L1 to LP's NE": f"{r['l1_to_lp']:.3g}" if "l1_to_lp" in r else "",
          "pi(copy)/pi(orig) end (start)": (", ".join(f"{a:.3g} ({b:.3g})" for a, b in
                                                      zip(r["copy_ratio_end"][:2], r["copy_ratio_start"][:2]))
                                            if "copy_ratio_end" in r else "")} for r in rows],
        ["game", "method", "expl", "rate", "L1 to max-entropy NE", "L1 to LP's NE", "pi(copy)/pi(orig) end (start)"])
    print(table)
    if args.write:
        rec = {**common.header("repro_multi_equilibria", ["cvxpy"]), "T": T, "rows": rows}
        (common.RESULTS / "repro_multi_equilibria.json").write_text(json.dumps(rec, indent=1, default=str))
        (common.RESULTS / "repro_multi_equilibria.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
