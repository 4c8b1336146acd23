"""Benchmark scripts: a missing peer is "not installed" (never a time-out), and committed results are only
replaced when asked (``--write`` / ``--machine``)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_missing_nashpy_is_not_installed_for_every_size(monkeypatch):
    bt = _load("bench_tabular")
    monkeypatch.setitem(sys.modules, "nashpy", None)  # import nashpy -> ImportError, as without the package
    skip: list[int] = []
    games = [np.full((3, 3), 0.5)]
    for n in (10, 100, 1000):
        out = bt.nashpy_peers([g - 0.5 for g in games], games, n, 5.0, skip)
        for name in ("nashpy LP", "nashpy Lemke-Howson"):
            assert out[name]["status"].startswith("not installed"), out[name]
            assert "did not finish" not in out[name]["status"]
    assert skip == []  # an absent peer never marks larger sizes as timed out


def test_results_go_to_scratch_unless_asked(tmp_path, monkeypatch):
    common = _load("common")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "SCRATCH", tmp_path / "scratch")
    js, md = common.write("x", "m", {"a": 1}, "| a |", publish=False)
    assert js.parent == tmp_path / "scratch" and not (tmp_path / "results").exists()
    js, md = common.write("x", "m", {"a": 1}, "| a |", publish=True)
    assert js == tmp_path / "results" / "x-m.json" and md.read_text() == "| a |\n"
    ap = argparse.ArgumentParser()
    common.add_output_args(ap)
    assert not common.publishing(ap.parse_args([]))
    assert common.publishing(ap.parse_args(["--write"])) and common.publishing(ap.parse_args(["--machine", "box"]))


def test_every_benchmark_script_takes_write():
    for script in ("bench_tabular", "bench_losses", "bench_llm_peers", "plot_exactness", "bench_apps"):
        text = (ROOT / "benchmarks" / f"{script}.py").read_text()
        assert "add_output_args" in text or '"--write"' in text, script
        assert "common.RESULTS /" not in text, script  # no direct write into the committed results
