"""How the neural losses were verified: error of the loss minimiser against the exact tabular step.

For each algorithm, on a random 5-response game: (i) minimise ``alg.loss`` over a softmax table with exact
(enumerated) weights — the error to ``alg.update`` is at the optimiser's tolerance (~1e-9); (ii) minimise it
on ``B`` sampled contexts with Bernoulli preference feedback — the error shrinks like ``1/sqrt(B)``.
With ``--write`` it replaces ``docs/exactness.png`` and ``benchmarks/results/exactness.json``; without, it writes both
into ``outputs/benchmarks/``.  Run: ``python benchmarks/plot_exactness.py --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nashalign import games  # noqa: E402
from nashalign.algorithms import get_algorithm  # noqa: E402
from nashalign.policies import SoftmaxTable, exact_loss_inputs  # noqa: E402
from nashalign.sampled import SampledRunner  # noqa: E402
from nashalign.solve import exact_signal  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALGS = {"nash_md": (1.0, 0.2), "egpo": (1.0, 0.2), "inpo": (1.0, 0.2), "omwu": (1.0, 0.2), "sppo": (1.0, 0.0),
        "dno": (1.0, 0.0), "spo": (1.0, 0.0)}
BATCHES = (16, 64, 256, 1024, 4096)


def one_step_exact(alg, st, P):
    for ph in range(alg.phases):
        st = alg.update(st, exact_signal(P, alg.opponents(st, ph)), ph)
    return st


def enumerated_error(alg, st, P) -> float:
    err = 0.0
    for ph in range(alg.phases):
        sig = exact_signal(P, alg.opponents(st, ph))
        nxt = alg.update(st, sig, ph)
        target = nxt.memory["half"] if (alg.phases == 2 and ph == 0) else nxt.logp
        table = SoftmaxTable(st.logp).double()
        opt = torch.optim.LBFGS(table.parameters(), lr=1, max_iter=400, tolerance_grad=1e-14,
                                tolerance_change=1e-16, line_search_fn="strong_wolfe")

        def closure(table=table, opt=opt, st=st, sig=sig):
            opt.zero_grad()
            loss = alg.loss(exact_loss_inputs(alg, st, sig, table.log_probs())).loss
            loss.backward()
            return loss

        for _ in range(4):
            opt.step(closure)
        err = max(err, float(np.abs(np.exp(table.log_probs().detach().numpy()) - np.exp(target)).max()))
        st = nxt
    return err


def main() -> None:
    torch.set_num_threads(1)
    game = games.random_game(5, num_contexts=1, seed=3, ref="random")
    rows = {}
    for name, (eta, tau) in ALGS.items():
        alg = get_algorithm(name, eta=eta, tau=tau)
        st0 = alg.init(game.log_ref, game.log_ref)
        exact = one_step_exact(alg, st0, game.P)
        sampled = []
        for b in BATCHES:
            errs = []
            for seed in range(3):
                got = SampledRunner(game, alg, batch=b, inner_steps=300, lr=0.05, seed=seed).iterate(st0)
                errs.append(float(np.abs(np.exp(got.logp) - np.exp(exact.logp)).max()))
            sampled.append(float(np.mean(errs)))
        rows[name] = {"enumerated": enumerated_error(alg, st0, game.P), "sampled": sampled}
        print(f"{name:8s} enumerated {rows[name]['enumerated']:.1e}  sampled " +
              " ".join(f"{e:.1e}" for e in sampled))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in rows.items():
        line, = ax.loglog(BATCHES, r["sampled"], marker="o", label=name)
        ax.scatter([BATCHES[-1] * 4], [max(r["enumerated"], 1e-12)], color=line.get_color(), marker="*", s=80)
    ax.loglog(BATCHES, 0.5 / np.sqrt(BATCHES), "k--", lw=1, label=r"$\propto 1/\sqrt{B}$")
    ax.axvline(BATCHES[-1] * 2, color="grey", lw=0.5)
    ax.text(BATCHES[-1] * 4, 3e-8, "exact\nweights", ha="center", fontsize=8)
    ax.set_xlabel("sampled contexts per iteration B (Bernoulli feedback)")
    ax.set_ylabel(r"max$_y$ |$\pi_\theta$ - exact step|")
    ax.set_title("Loss minimiser vs exact tabular update (one iteration)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    write = "--write" in sys.argv[1:]  # replace the committed plot and results only when asked
    out = (ROOT / "docs" if write else ROOT / "outputs" / "benchmarks") / "exactness.png"
    results = (ROOT / "benchmarks" / "results" if write else out.parent) / "exactness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"batches": BATCHES, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
