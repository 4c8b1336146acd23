"""nashalign.reporting: writers, tables, plots, and the sweep summary built from run records (no Hydra)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import nashalign
from nashalign import reporting
from nashalign.games import random_game, rock_paper_scissors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ generic writers
def test_format_number():
    f = reporting.format_number
    assert f(0.0) == "0" and f(3) == "3" and f(None) == "-" and f(math.nan) == "-"
    assert f(0.125) == "0.125" and f(1234.5) == "1.23e+03"
    assert f(3.4e-7) == "3.4e-07" and f(-2e-5) == "-2.0e-05"
    assert f(1e-17, tiny=1e-15) == "~0" and f(-1e-17, tiny=1e-15) == "~0" and f(1e-3, tiny=1e-15) == "0.001"
    assert f(math.inf) == "inf" and f("egpo") == "egpo" and f(True) == "True"


def test_markdown_table():
    rows = [{"alg": "egpo", "kl": 1.5e-9, "note": "a|b"}, {"alg": "mwu"}]
    md = reporting.markdown_table(rows, ["alg", ("kl", "KL"), "note"])
    lines = md.splitlines()
    assert lines[0] == "| alg | KL | note |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| egpo | 1.5e-09 | a\\|b |"
    assert lines[3] == "| mwu | - | - |"


def test_write_json_and_csv_round_trip(tmp_path):
    obj = {"a": np.arange(3), "b": np.float64(0.5), "c": math.nan, "p": tmp_path}
    p = reporting.write_json(obj, tmp_path / "sub" / "x.json")
    back = reporting.read_json(p)
    assert back["a"] == [0, 1, 2] and back["b"] == 0.5 and math.isnan(back["c"]) and back["p"] == str(tmp_path)
    rows = [{"x": 1, "y": 0.1 + 0.2}, {"x": 2, "z": "s"}]
    reporting.write_csv(rows, tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["x", "y", "z"]
    assert float(got[0]["y"]) == 0.1 + 0.2  # full precision
    assert got[1]["y"] == "" and got[1]["z"] == "s"


def test_plot_curves_writes_a_log_scale_png(tmp_path):
    x = np.arange(0, 100, 10)
    series = [
        reporting.Curve("a", x, np.exp(-x / 5.0)),
        {"label": "a avg", "x": x, "y": np.r_[np.exp(-x[:-1] / 10.0), 0.0], "linestyle": "--", "legend": False},
    ]
    p = reporting.plot_curves(
        series, tmp_path / "p.png", "iterations", "KL", logy=True, title="t", styles={"-": "last", "--": "average"}
    )
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


# ------------------------------------------------------------------ run records and sweep summaries
def _run(tmp_path, name, game, alg, eta, tau, steps=60, label=None, **kw):
    target = nashalign.solve_regularized_nash(game, tau) if tau > 0 else nashalign.solve_nash(game)
    res = nashalign.solve(game, alg, eta=eta, tau=tau, steps=steps, record_every=10, target=target, **kw)
    rec = reporting.run_record(
        res,
        game,
        game_name=name,
        label=label or alg,
        target=target,
        target_kind="regularized Nash" if tau > 0 else "Nash",
    )
    reporting.write_run(tmp_path / f"{name}_{alg}_{eta}_{tau}", res, rec)
    return res, rec


def test_run_record_per_context_metrics_match_the_history(tmp_path):
    game = random_game(5, num_contexts=3, seed=0, ref="random")
    res, rec = _run(tmp_path, "rg", game, "egpo", 0.3, 0.1)
    for col in ("expl_last", "reg_expl_last", "kl_target_last", "expl_avg", "kl_target_avg"):
        assert len(rec["contexts"][col]) == 3
        assert np.mean(rec["contexts"][col]) == pytest.approx(res.history.last(col), rel=1e-9, abs=1e-15)
    files = {p.name for p in (tmp_path / "rg_egpo_0.3_0.1").iterdir()}
    assert files == {"history.json", "history.csv", "result.json", "run.json"}
    assert "KL to pi*_tau" in reporting.one_line(rec)


def test_write_summary_tables_and_plots(tmp_path):
    rps = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    _run(tmp_path, "rps", rps, "egpo", 0.1, 0.1)
    _run(tmp_path, "rps", rps, "egpo", 0.5, 0.1)  # same label, different eta: labels get "(eta=...)"
    r_mwu, _ = _run(tmp_path, "rps", rps, "mwu", 0.1, 0.0)
    _run(tmp_path, "rps", rps, "sppo", 0.1, 0.0)  # identical dynamics to mwu: one line "mwu = sppo"
    rg = random_game(4, num_contexts=2, seed=3, ref="random")
    _run(tmp_path, "rg", rg, "omd", 0.2, 0.1)
    out = reporting.write_summary(tmp_path, title="test sweep")
    rows = {(r["game"], r["algorithm"]): r for r in out["rows"]}
    assert set(rows) == {
        ("rps", "egpo (eta=0.1)"),
        ("rps", "egpo (eta=0.5)"),
        ("rps", "mwu"),
        ("rps", "sppo"),
        ("rg", "omd"),
    }
    assert rows[("rps", "mwu")]["metric"] == "expl" and rows[("rps", "mwu")]["target"] == "Nash"
    assert rows[("rps", "mwu")]["last"] == pytest.approx(r_mwu.history.last("expl_last"))
    assert rows[("rps", "egpo (eta=0.5)")]["metric"] == "KL to pi*_tau"
    assert rows[("rg", "omd")]["ctx_max"] >= rows[("rg", "omd")]["ctx_median"]
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# test sweep") and "last: median over contexts" in md and "measured against" in md
    with open(tmp_path / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    names = sorted(p.name for p in out["plots"])
    assert names == ["plot_rg.png", "plot_rps.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in out["plots"])


def test_summary_lists_the_exact_equilibria_once_per_game_and_target(tmp_path):
    rps = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    _run(tmp_path, "rps", rps, "egpo", 0.1, 0.1)
    _run(tmp_path, "rps", rps, "omd", 0.1, 0.1)  # same target: one row
    _run(tmp_path, "rps", rps, "mwu", 0.1, 0.0)
    big = random_game(12, num_contexts=2, seed=4)
    _run(tmp_path, "rg12", big, "mwu", 0.1, 0.0, steps=20)
    out = reporting.write_summary(tmp_path, plots=False)
    rows = {(r["game"], r["equilibrium"]): r for r in reporting.equilibria_rows(reporting.load_runs(tmp_path))}
    assert set(rows) == {("rps", "Nash"), ("rps", "regularized Nash"), ("rg12", "Nash")}
    assert rows[("rps", "Nash")]["policy"] == "[0.333, 0.333, 0.333]"
    assert rows[("rps", "Nash")]["exploitability"] < 1e-12
    star = nashalign.solve_regularized_nash(rps, 0.1)
    assert rows[("rps", "regularized Nash")]["policy"] == "[" + ", ".join(f"{p:.3f}" for p in star) + "]"
    assert rows[("rps", "regularized Nash")]["exploitability"] < 1e-20  # tau KL(pi* || BR_tau(pi*))
    ne = nashalign.solve_nash(big)
    k0 = int((ne[0] > reporting.SUPPORT_THRESHOLD).sum())
    assert rows[("rg12", "Nash")]["policy"] == f"{k0} of 12 responses, max {ne[0].max():.3f}"
    assert rows[("rg12", "Nash")]["support"] == pytest.approx((ne > reporting.SUPPORT_THRESHOLD).sum(-1).mean())
    assert rows[("rg12", "Nash")]["exploitability"] == pytest.approx(float(np.max(nashalign.exploitability(big, ne))))
    md = (tmp_path / "summary.md").read_text()
    assert "## Exact equilibria (cvxpy)" in md and out["equilibria"] in md


def test_summary_metric_dg_and_grouping_by_tau(tmp_path):
    game = random_game(4, num_contexts=3, seed=1, ref="random")
    _, rec1 = _run(tmp_path, "rg", game, "egpo", 0.4, 0.1)
    _, rec2 = _run(tmp_path, "rg", game, "egpo", 0.4, 0.01)
    out = reporting.write_summary(tmp_path, metric="dg", group_by=("game", "tau"))
    by_tau = {r["tau"]: r for r in out["rows"]}
    assert by_tau[0.1]["last"] == pytest.approx(2 * rec1["final"]["reg_expl_last"])
    assert by_tau[0.01]["ctx_max"] == pytest.approx(2 * max(rec2["contexts"]["reg_expl_last"]))
    assert by_tau[0.1]["algorithm"] == "egpo"  # unique within its (game, tau) group: no suffix
    assert sorted(p.name for p in out["plots"]) == ["plot_rg_tau0.01.png", "plot_rg_tau0.1.png"]


def test_summary_of_sampled_runs_uses_queries(tmp_path):
    game = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    _run(tmp_path, "rps", game, "egpo", 0.5, 0.1, steps=4, mode="sampled", batch=8, inner_steps=2, seed=0)
    out = reporting.write_summary(tmp_path)
    assert out["rows"][0]["queries"] > 0 and "queries" in out["markdown"]
    hist = json.loads(next(tmp_path.rglob("history.json")).read_text())
    assert hist["queries"][-1] == out["rows"][0]["queries"]
    with pytest.raises(ValueError, match="x_axis"):
        reporting.write_summary(tmp_path, x_axis="time")
    with pytest.raises(ValueError, match="unknown metric"):
        reporting.write_summary(tmp_path, metric="accuracy")


# ------------------------------------------------------------------ plots a reader can read (issue 12)
def _line_data(fig):
    return [(ax, line) for ax in fig.axes for line in ax.get_lines()]


def test_coinciding_curves_stay_visible_with_offset_markers():
    x = np.arange(0, 200, 2)
    y = np.exp(-x / 40.0)
    curves = [reporting.Curve(name, x, y * (1 + 1e-6 * i), color=c)
              for i, (name, c) in enumerate(zip("abc", reporting.COLORS))]  # fmt: skip
    fig = reporting.curves_figure(curves, "it", "KL")
    lines = [line for _, line in _line_data(fig)]
    assert len(lines) == 3
    marks = [(line.get_marker(), line.get_markevery()) for line in lines]
    assert len({m for m, _ in marks}) == 3  # a marker shape each
    starts = [every[0] for _, every in marks]
    strides = {every[1] for _, every in marks}
    assert len(set(starts)) == 3 and len(strides) == 1  # same stride, different offsets: no mark hidden
    assert curves[0].marker is None  # the caller's curves are not modified


def test_average_curve_shares_the_marker_of_its_listed_curve():
    x = np.arange(10.0)
    fig = reporting.curves_figure(
        [reporting.Curve("a", x, x + 1, color="#1f77b4"), reporting.Curve("a", x, x + 2, "--", "#1f77b4", False)],
        "it", "y",
    )  # fmt: skip
    (l1, l2) = [line for _, line in _line_data(fig)]
    assert l1.get_marker() == l2.get_marker() and l2.get_linestyle() == "--"


def test_different_metrics_get_separate_axes(tmp_path):
    """The demo's plot: tau = 0 rows (exploitability) and tau > 0 rows (KL to pi*_tau) never share an axis."""
    rps = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    _run(tmp_path, "rps", rps, "egpo", 0.1, 0.1)
    _run(tmp_path, "rps", rps, "mwu", 0.1, 0.0)
    runs = reporting.load_runs(tmp_path)
    curves, xlabel, _ = reporting._group_curves(runs, [r["label"] for r in runs], "auto", "auto")
    panels = {c.label: c.panel for c in curves}
    assert panels["egpo"] != panels["mwu"] and "KL" in panels["egpo"] and "exploitability" in panels["mwu"]
    fig = reporting.curves_figure(curves, xlabel, "")
    assert len(fig.axes) == 2
    assert {ax.get_ylabel() for ax in fig.axes} == {panels["egpo"], panels["mwu"]}
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    # one metric: one axis
    _run(tmp_path / "one", "rps", rps, "omd", 0.1, 0.1)
    one = reporting.load_runs(tmp_path / "one")
    curves, _, ylabel = reporting._group_curves(one, ["omd"], "auto", "auto")
    assert {c.panel for c in curves} == {None} and "KL" in ylabel


def test_colours_are_strong():
    import colorsys

    from matplotlib.colors import to_rgb

    for c in reporting.COLORS:
        h, lightness, s = colorsys.rgb_to_hls(*to_rgb(c))
        assert lightness < 0.6, c  # no pale tints (the old palette ended in #aec7e8, lightness 0.8)
        assert s > 0.25 or c == "#000000", c  # and no greys (grey: saturation 0)
    assert len(set(reporting.COLORS)) == len(reporting.COLORS)


def test_llm_curves_have_a_title_readable_names_and_strong_colours(tmp_path, monkeypatch):
    runs = {
        name: [{"iteration": i, "exploitability": 0.2 / (i + 1) + k * 1e-3, "kl_target": 0.5 / (i + 1)} for i in range(0, 31, 3)]
        for k, name in enumerate(["nash_md", "egpo", "omd"])
    }
    seen = {}
    real = reporting.curves_figure

    def spy(*args, **kwargs):
        seen["fig"] = real(*args, **kwargs)
        return seen["fig"]

    monkeypatch.setattr(reporting, "curves_figure", spy)
    path = reporting.plot_metric_histories(runs, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    fig = seen["fig"]
    assert len(fig.axes) == 2
    assert fig._suptitle is not None and "3 runs" in fig._suptitle.get_text()
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert ylabels == [reporting.METRIC_NAMES["exploitability"], reporting.METRIC_NAMES["kl_target"]]
    assert all("_" not in lab.split("  ")[0] or "π*_τ" in lab for lab in ylabels)  # not the raw keys
    assert fig.axes[0].get_xlabel() == "iteration"
    colours = {line.get_color() for ax in fig.axes for line in ax.get_lines()}
    assert colours <= set(reporting.COLORS) and len(colours) == 3
    assert reporting.plot_metric_histories(runs, tmp_path / "none.png", keys=("nope",)) is None
    runs["inpo"] = runs["omd"]  # identical curves: one line "omd = inpo"
    reporting.plot_metric_histories(runs, tmp_path / "curves.png")
    labels = {line.get_label() for line in seen["fig"].axes[0].get_lines()}
    assert "omd = inpo" in labels and "inpo" not in labels
    assert reporting.metric_name("exploitability/rps") == reporting.METRIC_NAMES["exploitability"] + " (rps)"


def test_llm_trainer_plots_through_reporting(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from nashalign.llm import trainer

    calls = []
    monkeypatch.setattr(reporting, "plot_metric_histories", lambda *a, **k: calls.append((a, k)) or a[1])
    runs = {"egpo": [{"iteration": 0, "exploitability": 0.2}]}
    assert trainer.plot_curves(runs, tmp_path / "c.png") == tmp_path / "c.png"
    assert calls and calls[0][0][0] is runs


def test_plot_results_is_the_apps_plot_for_solve_results(tmp_path):
    rps = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    star = nashalign.solve_regularized_nash(rps, 0.1)
    res = {
        "egpo": nashalign.solve(rps, "egpo", eta=0.5, tau=0.1, steps=100, target=star),
        "omd": nashalign.solve(rps, "omd", eta=0.5, tau=0.1, steps=100, target=star),
        "mwu": nashalign.solve(rps, "mwu", eta=0.1, steps=100),
    }
    p = reporting.plot_results(res, tmp_path / "r.png", title="rps")
    assert p.read_bytes()[:8] == PNG_MAGIC
    p = reporting.plot_results(list(res.values()), tmp_path / "s.png")  # labelled by the algorithms' names
    assert p.exists()
    with pytest.raises(ValueError, match="empty"):
        reporting.plot_results({}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="SolveResult"):
        reporting.plot_results({"a": [1, 2]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="metric"):
        reporting.plot_results(res, tmp_path / "x.png", metric="accuracy")


def test_load_runs_skips_stale_and_nested_runs(tmp_path):
    import os
    import time

    rps = rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    res = nashalign.solve(rps, "egpo", eta=0.1, tau=0.1, steps=5)
    rec = reporting.run_record(res, rps, game_name="rps", label="egpo")
    reporting.write_run(tmp_path, res, rec)
    reporting.write_run(tmp_path / "old", res, rec)
    old = time.time() - 100
    os.utime(tmp_path / "old" / "run.json", (old, old))
    assert len(reporting.load_runs(tmp_path)) == 2
    assert len(reporting.load_runs(tmp_path, since=time.time() - 50)) == 1
    assert [r["dir"] for r in reporting.load_runs(tmp_path, recursive=False)] == [str(tmp_path)]


def test_a_run_keeps_its_marker_on_every_panel_and_few_points_still_get_distinct_offsets():
    x = np.arange(11)
    curves = [reporting.Curve(name, x, 1.0 / (x + 1), panel=p) for name in "abcde" for p in ("P1", "P2")]
    fig = reporting.curves_figure(curves, "it", "")
    per_panel = [[(line.get_marker(), line.get_markevery()) for line in ax.get_lines()] for ax in fig.axes]
    assert per_panel[0] == per_panel[1]  # same run, same marker and offset on both panels
    assert len({every[0] for _, every in per_panel[0]}) == 5  # 11 points, 5 identical curves: 5 offsets


def test_the_tabular_readme_plotting_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "tabular" / "README.md").read_text()
    block = re.search(r"The same plot from Python.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "tabular/README.md", "exec"), {})
    assert (tmp_path / "rps.png").read_bytes()[:8] == PNG_MAGIC
