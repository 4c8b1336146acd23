"""The protocol module knows no concrete oracle: ``as_oracle`` dispatches through adapters that join a registry."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nashalign.oracles.base as base
from nashalign.oracles import FunctionOracle, JudgeAdapter, MatrixOracle, as_oracle, register_adapter

BASE_PY = Path(base.__file__)


def test_loading_the_protocol_module_imports_no_concrete_oracle():
    # Execute base.py on its own (without the package __init__, which imports every adapter) and list the
    # nashalign modules it pulled in: none, and its adapter registry starts empty.
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("nashalign_oracles_base_alone", {str(BASE_PY)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(sorted(m for m in sys.modules if m.startswith("nashalign")))
print(len(mod._ADAPTERS))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"base.py imported {out[0]}"
    assert out[1] == "0"
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(ast.parse(BASE_PY.read_text()))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    ]
    assert not [m for m in imported if m and m.startswith("nashalign")], imported


def test_as_oracle_without_adapters_refuses_a_judge_object(monkeypatch):
    monkeypatch.setattr(base, "_ADAPTERS", [])

    class Judge:
        def judge(self, prompts, completions):
            return [0] * len(prompts)

    with pytest.raises(TypeError, match="judge\\(prompts, completions\\)"):
        as_oracle(Judge())


def test_trl_judge_joins_the_registry_and_as_oracle_adapts_judges():
    class Judge:
        def judge(self, prompts, completions):
            return [0 if len(a) > len(b) else 1 for a, b in completions]

    oracle = as_oracle(Judge(), name="len")
    assert isinstance(oracle, JudgeAdapter)
    assert oracle.name == "len"
    assert oracle(["q", "q"], ["long", "a"], ["b", "longer"]).tolist() == [1.0, 0.0]
    assert any(build is JudgeAdapter for _, build in base._ADAPTERS)


def test_register_adapter_order_and_idempotence(monkeypatch):
    monkeypatch.setattr(base, "_ADAPTERS", list(base._ADAPTERS))

    class Scorer:  # callable, but an adapter claims it first
        def __call__(self, prompts, first, second):
            return torch.zeros(len(first))

    def build(obj, name=None):
        return FunctionOracle(lambda x, a, b: torch.full((len(a),), 0.25), name=name or "scorer")

    def accepts(obj):
        return isinstance(obj, Scorer)

    register_adapter(accepts, build)
    register_adapter(accepts, build)
    assert sum(1 for a, _ in base._ADAPTERS if a is accepts) == 1
    out = as_oracle(Scorer())
    assert out.name == "scorer"
    assert out([0], [1], [2]).tolist() == [0.25]
    # nashalign oracles pass through before any adapter is asked
    m = MatrixOracle(torch.tensor([[0.5, 0.7], [0.3, 0.5]], dtype=torch.float64))
    assert as_oracle(m) is m
    # plain functions still become FunctionOracle
    assert isinstance(as_oracle(lambda x, a, b: [0.5] * len(a)), FunctionOracle)


def test_register_adapter_rejects_non_callables():
    with pytest.raises(TypeError, match="two callables"):
        register_adapter("not callable", JudgeAdapter)
