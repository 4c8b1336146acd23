"""Both apps run the algorithms added for issue 16 (apo, mnpo, rspo, xpo) from their conf/algorithm files."""

from __future__ import annotations

import csv

import numpy as np
from test_llm_smoke import FAST
from test_llm_smoke import run as run_llm
from test_tabular_smoke import run_app

import nashalign
from nashalign.games import rock_paper_scissors

NEW = ["apo", "mnpo", "rspo", "xpo"]


def test_tabular_app_runs_the_new_algorithms(tmp_path):
    sweep = tmp_path / "sweep"
    run_app(tmp_path, "-m", f"algorithm={','.join(NEW)}", "game=rps", "run.steps=30", "run.record_every=5",
            f"hydra.sweep.dir={sweep}")
    with open(sweep / "summary.csv") as f:
        rows = {r["algorithm"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(NEW)
    game = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    # the app's apo row is the library's run with conf/algorithm/apo.yaml's values (eta 0.1, alpha 0.3, tau 0)
    apo = nashalign.solve(game, "apo", eta=0.1, tau=0.0, alpha=0.3, steps=30, record_every=5)
    np.testing.assert_allclose(float(rows["apo"]["last"]), apo.history.last("expl_last"), rtol=1e-9)


def test_llm_app_runs_the_new_algorithms(tmp_path):
    sweep = tmp_path / "sweep"
    run_llm("train.py", "+experiment=lm_benchmark", f"algorithm={','.join(NEW)}", f"hydra.sweep.dir={sweep}", *FAST,
            "trainer.k=2", "trainer.opponent_samples=1")
    table = (sweep / "summary.md").read_text()
    for name in NEW:
        assert f"| {name} |" in table
