"""Griffe extension: the Sphinx roles of nashalign's docstrings become links of the docs site.

The docstrings cross-reference with Sphinx roles (``:class:`PreferenceGame```, ``:func:`~nashalign.oracles.symmetrize```,
``:mod:`.base```), which Markdown would print verbatim.  Once the package is loaded, each role is resolved the
way Sphinx does -- absolute path, relative to the object's module (a leading dot), a sibling in the same class
or module, a name of the package -- and re-exports are followed to the object's definition.  A target that is
documented on the site becomes an autorefs link ``[`name`][canonical.path]`` (so ``mkdocs build --strict``
checks it); anything else (torch, a private helper) becomes plain code.  ``~`` shows the last component only,
as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)(?:\(\))?`")


def _walk(obj: Any):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _get(collection: Any, path: str) -> Any | None:
    try:
        obj = collection.get_member(path)
        return obj.final_target if obj.is_alias else obj
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _documented(obj: Any) -> bool:
    """Rendered on the site: every part public (the pages filter ``_`` names out)."""
    return not any(part.startswith("_") for part in obj.path.split("."))


def _resolve(collection: Any, obj: Any, target: str) -> Any | None:
    module = obj if obj.is_module else obj.module
    scopes = [obj] if obj.is_class or obj.is_module else []
    scopes += [p for p in (obj.parent, module) if p is not None]
    if target.startswith("."):
        stripped = target.lstrip(".")
        ups = len(target) - len(stripped) - 1
        base = module.path.split(".")
        base = base[: len(base) - ups] if ups else base
        candidates = [".".join([*base, stripped])]
    else:
        candidates = [target] + [f"{s.path}.{target}" for s in scopes] + [f"{module.package.path}.{target}"]
    for path in candidates:
        found = _get(collection, path)
        if found is not None:
            return found
    return None


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package (see the module docstring)."""

    def on_package(self, *, pkg: Any, loader: Any, **kwargs: Any) -> None:
        collection = loader.modules_collection
        for obj in _walk(pkg):
            if obj.docstring is None or ":" not in obj.docstring.value:
                continue

            def link(match: re.Match, obj: Any = obj) -> str:
                short, target = match.group(1), match.group(2)
                shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
                found = _resolve(collection, obj, target)
                if found is None or not _documented(found):
                    return f"`{shown}`"
                return f"[`{shown}`][{found.path}]"

            obj.docstring.value = ROLE.sub(link, obj.docstring.value)
