"""MkDocs hook: fail the build when a public name of nashalign is missing from the API reference.

Public names are read statically with griffe (nothing is imported): a module's ``__all__`` when it has one,
else its public top-level functions, classes and attributes defined in it.  Private modules (a path part
starting with ``_``) are skipped.  Each name must appear in the inventory mkdocstrings writes
(``site/objects.inv``) under its canonical path; a name exported lazily (``__getattr__`` over a ``_LAZY``
table, as in ``nashalign`` and ``nashalign.llm``) under the path its table names.  The hook also checks that building imported neither
nashalign nor transformers (mkdocstrings reads the sources, it does not run them).
"""

from __future__ import annotations

import ast
import sys
import zlib
from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError

PACKAGE = "nashalign"


def read_inventory(path: Path) -> set[str]:
    """The object names of a Sphinx-style ``objects.inv`` (version 2: four header lines, then zlib)."""
    raw = path.read_bytes()
    body = raw.split(b"\n", 4)[4]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines() if line.strip()}


def public_modules(module: Any) -> list[Any]:
    """``module`` and its submodules, recursively, without private ones."""
    out = [module]
    for name, member in module.members.items():
        if not member.is_alias and member.is_module and not name.startswith("_"):
            out += public_modules(member)
    return out


def lazy_exports(module: Any) -> dict[str, str]:
    """``{name: canonical path}`` from a module's ``_LAZY`` table (``name -> (module, attribute or None)``
    in ``nashalign``, ``name -> module`` in ``nashalign.llm``), read as a literal; ``{}`` without one."""
    table = module.members.get("_LAZY")
    if table is None or table.is_alias or table.value is None:
        return {}
    try:
        value = ast.literal_eval(str(table.value))
    except (ValueError, SyntaxError):
        return {}
    out = {}
    for name, target in value.items():
        if isinstance(target, tuple):
            mod, attr = target
            out[name] = mod if attr is None else f"{mod}.{attr}"
        else:
            out[name] = f"{target}.{name}"
    return out


def canonical(package: Any, path: str) -> str | None:
    """The path where the object named ``path`` is defined (re-exports followed); None if there is none."""
    obj = package
    try:
        for part in path.split(".")[1:]:
            obj = obj.members[part]
        return obj.final_target.path if obj.is_alias else obj.path
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def expected_names(module: Any, package: Any) -> dict[str, str | None]:
    """``{public path: canonical path or None (unresolved)}`` for one module."""
    lazy = {name: canonical(package, target) for name, target in lazy_exports(module).items()}
    if module.exports is not None and len(module.exports) > 0:
        names = [str(n) for n in module.exports]
    elif lazy:  # ``__all__ = sorted(_LAZY)`` and the like: not a literal, so read the table
        names = list(lazy)
    else:
        names = [
            n for n, m in module.members.items() if not n.startswith("_") and not m.is_alias and not m.is_module
        ]
    out: dict[str, str | None] = {}
    for name in names:
        member = module.members.get(name)
        if member is None:
            out[f"{module.path}.{name}"] = lazy.get(name)
            continue
        try:
            out[f"{module.path}.{name}"] = member.final_target.path if member.is_alias else member.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            out[f"{module.path}.{name}"] = None
    return out


def on_post_build(config: Any, **_: Any) -> None:
    leaked = [m for m in ("transformers", PACKAGE) if m in sys.modules]
    if leaked:
        raise PluginError(f"Building the docs imported {leaked}; mkdocstrings must read the sources statically.")
    inventory = read_inventory(Path(config["site_dir"]) / "objects.inv")
    root = Path(config["config_file_path"]).parent
    package = griffe.load(PACKAGE, search_paths=[str(root)], allow_inspection=False, resolve_aliases=True)
    missing = []
    for module in public_modules(package):
        for public, canonical in expected_names(module, package).items():
            if canonical is not None:
                if canonical not in inventory and public not in inventory:
                    missing.append(f"{public} (defined as {canonical})")
            else:
                missing.append(f"{public} (exported, but not found in the sources: fix __all__ or _LAZY)")
    if missing:
        raise PluginError(
            f"{len(missing)} public names are missing from the API reference (add their module to a page "
            "under docs/api/):\n  " + "\n  ".join(sorted(missing))
        )
