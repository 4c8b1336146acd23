"""The docs site's sources are consistent, checked without mkdocs installed (``make docs`` builds it strictly).

* every page in ``mkdocs.yml``'s nav exists, and every page under ``docs/`` is in the nav;
* every ``::: target`` of the API pages is a nashalign module, and every public module has one, so a new
  module cannot be left out of the reference (the build's hook then checks each public *name*);
* every file a page includes with ``--8<--`` exists (the guide of the tabular app lives beside the app).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "nashalign"


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    return []


def mkdocs_config() -> dict:
    # mkdocs.yml has no !!python tags, so the safe loader reads it
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def public_modules() -> set[str]:
    out = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            out.add(".".join(parts))
    return out


def directives() -> set[str]:
    found = set()
    for page in (DOCS / "api").glob("*.md"):
        found |= set(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), flags=re.M))
    return found


def test_nav_and_pages_agree():
    cfg = mkdocs_config()
    assert cfg["docs_dir"] == "docs" and cfg["strict"] is True
    nav = nav_pages(cfg["nav"])
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"nav names pages that do not exist: {missing}"
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    assert pages == set(nav), f"pages outside the nav: {sorted(pages - set(nav))}"


def test_every_public_module_has_an_api_directive_and_every_directive_is_a_module():
    found = directives()
    modules = public_modules()
    assert not (modules - found), f"public modules missing from docs/api/*.md: {sorted(modules - found)}"
    assert not (found - modules), f"directives naming no public module: {sorted(found - modules)}"


def test_snippet_includes_exist():
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r'^--8<-- "([^"]+)"\s*$', page.read_text(), flags=re.M):
            assert (ROOT / target).is_file(), f"{page.name} includes {target}, which does not exist"


def test_the_build_reads_sources_statically():
    """mkdocstrings must not import nashalign (and through it transformers): inspection is off."""
    cfg = mkdocs_config()
    plugin = next(p["mkdocstrings"] for p in cfg["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    assert plugin["handlers"]["python"]["options"]["allow_inspection"] is False
    assert "docs/hooks/api_coverage.py" in cfg["hooks"]


WALKTHROUGH_CHECK = """
import sys
import numpy as np
import torch
from nashalign import games, solve
from nashalign.algorithms import ALGORITHMS

torch.set_num_threads(1)  # tiny tables; do not contend for the shared cores
exec(compile(sys.stdin.read(), "docs/adding_an_algorithm.md", "exec"))
assert "selfplay_mirror" in ALGORITHMS
g = games.random_game(5, num_contexts=3, seed=4, ref="random")
for kw in ({"mode": "exact", "steps": 200}, {"mode": "sampled", "steps": 4, "seed": 3, "batch": 16}):
    new = solve(g, "selfplay_mirror", eta=0.5, tau=0.1, target=None, **kw)
    omd = solve(g, "omd", eta=0.5, tau=0.1, target=None, **kw)
    np.testing.assert_array_equal(new.last, omd.last)
    assert np.abs(new.last - g.ref).max() > 1e-3
print("ok")
"""


def test_the_walkthrough_sketch_registers_and_runs_like_omd():
    """The first Python block of docs/adding_an_algorithm.md is OMD under another name: registered in a fresh
    interpreter (the registry of this one is left alone), it reproduces OMD bit for bit, exactly and sampled."""
    import subprocess
    import sys

    text = (DOCS / "adding_an_algorithm.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    out = subprocess.run(
        [sys.executable, "-c", WALKTHROUGH_CHECK], input=code, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_spec_is_shown_verbatim_under_its_headings():
    """The SPEC hook fences every plain-text run (no emphasis from ``pi*``, no links from ``[l-m](y)``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plain_text_pages", DOCS / "hooks" / "plain_text_pages.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    text = "# T\n\nx = pi*_tau * y\n[l-m](y)\n\n## S\n| a | b |\n|---|---|\n| 1 | 2 |\nafter\n"
    assert hook.verbatim(text) == (
        "# T\n\n\n```text\nx = pi*_tau * y\n[l-m](y)\n```\n\n## S\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n\n"
        "```text\nafter\n```\n\n"
    )
    out = hook.verbatim((DOCS / "SPEC.md").read_text())
    assert out.count("```text") == out.count("```") // 2 > 10  # balanced fences
    headings = [line for line in (DOCS / "SPEC.md").read_text().splitlines() if line.startswith("#")]
    assert [line for line in out.splitlines() if line.startswith("#")] == headings
