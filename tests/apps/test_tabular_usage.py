"""The tabular app as a new user drives it (issue 12, "Apps and reports"): each behaviour by subprocess.

Custom ``_target_`` algorithms keep their own name, ``--help`` shows only the app's groups, a failed run
says so and never plots a stale earlier run, inline games, and a user's own config folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nashalign
from nashalign import configs

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tabular" / "run.py"

HALF_MIX = '''
from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current


@dataclass(frozen=True)
class HalfMix(MirrorAlgorithm):
    """A user's rule: a mirror step against the current iterate (OMD's step under another name)."""

    name = "half_mix"
    tau_rule = "positive"
    forms = ("regression",)
    estimator = "pair"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
'''


def run_app(cwd: Path, *overrides: str, ok: bool = True, app: Path = APP) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(app), *overrides], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_custom_target_is_labelled_by_its_own_name_everywhere(tmp_path):
    (tmp_path / "my_algs.py").write_text(HALF_MIX)
    out = tmp_path / "run"
    proc = run_app(tmp_path, "algorithm=nash_md", "algorithm._target_=my_algs.HalfMix", "run.steps=30",
                   f"hydra.run.dir={out}")  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "half_mix on rps" in log and "nash_md on" not in log  # the log line
    assert json.loads((out / "run.json").read_text())["label"] == "half_mix"
    assert json.loads((out / "result.json").read_text())["settings"]["algorithm"] == "half_mix"
    assert "| rps | half_mix |" in (out / "summary.md").read_text()
    # nash_md's null keys (mixture, form) are not passed to the user's class; its numbers are OMD's step
    res = nashalign.SolveResult.from_json(out / "result.json")
    game = nashalign.games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    omd = nashalign.solve(game, "omd", eta=0.1, tau=0.1, steps=30, target=None)
    np.testing.assert_allclose(res.last, omd.last, atol=1e-14)


def test_shipped_variant_keeps_its_option_name(tmp_path):
    out = tmp_path / "run"
    proc = run_app(tmp_path, "algorithm=nash_md_pg", "run.steps=5", f"hydra.run.dir={out}")
    assert "nash_md_pg on rps" in proc.stdout + proc.stderr
    assert json.loads((out / "run.json").read_text())["label"] == "nash_md_pg"


def test_algorithm_null_keys_are_left_out_and_delete_works_for_set_keys():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf" / "tabular"), version_base="1.3"):
        cfg = compose("tabular", ["algorithm=nash_md_pg", "~algorithm.mixture"])
        assert "mixture" not in cfg.algorithm
        alg = configs.instantiate_algorithm(cfg.algorithm)
        assert alg.mixture is None  # the constructor's default: eta * tau
        cfg = compose("tabular", ["algorithm=nash_md"])
        assert cfg.algorithm.mixture is None
        assert configs.instantiate_algorithm(cfg.algorithm).mixture is None
    with pytest.raises(ValueError, match="_target_"):
        configs.instantiate_algorithm({"eta": 0.1})


def test_inline_game_replaces_the_default_option(tmp_path):
    out = tmp_path / "run"
    P = "[[0.5, 0.9, 0.3], [0.1, 0.5, 0.6], [0.7, 0.4, 0.5]]"
    proc = run_app(tmp_path, f"game={{_target_: nashalign.games.PreferenceGame, P: {P}}}", "algorithm=egpo",
                   "algorithm.eta=0.5", "run.steps=200", f"hydra.run.dir={out}")  # fmt: skip
    assert "egpo on inline" in proc.stdout + proc.stderr
    rec = json.loads((out / "run.json").read_text())
    assert rec["game"] == "inline" and rec["num_responses"] == 3
    game = nashalign.PreferenceGame(np.array(json.loads(P)))
    star = nashalign.solve_regularized_nash(game, 0.1)
    res = nashalign.SolveResult.from_json(out / "result.json")
    assert nashalign.kl_divergence(game, star, res.last) < 1e-8  # the inline P, not rock-paper-scissors


def test_inline_override_rewrite():
    argv = ["run.py", "game={_target_: x.Y, P: [[0.5]]}", "algorithm=egpo", "run.steps=3"]
    assert configs.inline_group_overrides(argv, ("game", "algorithm")) == [
        "run.py", "~game", "+game={_target_: x.Y, P: [[0.5]]}", "algorithm=egpo", "run.steps=3",
    ]  # fmt: skip
    assert configs.inline_group_overrides(["r", "game=rps", "run.x={a: 1}"], ("game",)) == ["r", "game=rps", "run.x={a: 1}"]


def test_a_users_config_folder_on_the_search_path(tmp_path):
    mine = tmp_path / "my_conf"
    (mine / "game").mkdir(parents=True)
    (mine / "game" / "two.yaml").write_text("_target_: nashalign.games.PreferenceGame\nP: [[0.5, 0.8], [0.2, 0.5]]\n")
    out = tmp_path / "run"
    run_app(tmp_path, f"hydra.searchpath=[file://{mine}]", "game=two", "algorithm=omd", "run.steps=5",
            f"hydra.run.dir={out}")  # fmt: skip
    rec = json.loads((out / "run.json").read_text())
    assert rec["game"] == "two" and rec["num_responses"] == 2


def test_failed_run_reports_the_failure_and_never_plots_a_stale_run(tmp_path):
    out = tmp_path / "run"
    run_app(tmp_path, "run.steps=5", f"hydra.run.dir={out}")  # an earlier run in the same directory
    old = time.time() - 3600
    for p in out.iterdir():
        os.utime(p, (old, old))
    proc = run_app(tmp_path, "algorithm=omd", "algorithm.tau=0", f"hydra.run.dir={out}", ok=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "run failed (" in text and "tau must be > 0" in text
    assert "plots:" not in text and "nothing to summarize" not in text
    assert (out / "plot_rps.png").stat().st_mtime == pytest.approx(old)  # not redrawn from the stale run.json


def test_stale_runs_of_an_earlier_sweep_are_not_summarized(tmp_path):
    sweep = tmp_path / "sweep"
    run_app(tmp_path, "-m", "algorithm=egpo,mwu", "run.steps=5", f"hydra.sweep.dir={sweep}")
    old = time.time() - 3600
    for p in sweep.rglob("*"):
        os.utime(p, (old, old))
    proc = run_app(tmp_path, "-m", "algorithm=omd", "run.steps=5", f"hydra.sweep.dir={sweep}")
    assert "ignored 1 run.json file(s)" in proc.stdout  # job 1 (mwu) of the earlier sweep
    rows = (sweep / "summary.md").read_text()
    assert "| rps | omd |" in rows and "mwu" not in rows and "egpo" not in rows


@pytest.mark.parametrize(
    "app, own, foreign",
    [
        ("tabular/run.py", {"algorithm", "game", "run", "oracle", "egpo_beta", "experiment"},
         {"model", "trainer", "data", "accelerate"}),
        ("llm/train.py", {"algorithm", "model", "oracle", "data", "trainer", "experiment"},
         {"game", "run", "egpo_beta", "accelerate"}),
    ],
)  # fmt: skip
def test_help_lists_only_the_apps_own_groups(tmp_path, app, own, foreign):
    proc = run_app(tmp_path, "--help", app=ROOT / app)
    block = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    groups = {line.split(":")[0].strip() for line in block.splitlines() if ": " in line}
    assert groups == own, groups
    assert not groups & foreign


def test_experiments_belong_to_their_app(tmp_path):
    proc = run_app(tmp_path, "+experiment=demo", "--cfg", "job", app=ROOT / "llm" / "train.py", ok=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "experiment/demo" in text and "lm_benchmark" in text  # lists its own presets
    proc = run_app(tmp_path, "+experiment=lm_benchmark_demo", "--cfg", "job", app=ROOT / "llm" / "train.py")
    assert "iterations: 30" in proc.stdout


def test_conf_readme_describes_the_layout():
    text = (ROOT / "conf" / "README.md").read_text()
    assert "not** a Hydra group" in text and "hydra.searchpath" in text and "--num_processes 2" in text
    for app_dir in ("tabular", "llm"):
        for link in (ROOT / "conf" / app_dir).iterdir():
            if link.is_symlink():
                assert link.resolve().parent == (ROOT / "conf").resolve(), link  # groups live once in conf/<group>
