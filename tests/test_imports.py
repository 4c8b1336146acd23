"""The public surface resolves, and `import nashalign` stays light (no transformers, no cvxpy until used)."""

from __future__ import annotations

import subprocess
import sys

import nashalign


def test_every_public_name_resolves():
    for name in nashalign.__all__:
        assert getattr(nashalign, name) is not None, name


def test_import_nashalign_does_not_import_heavy_stacks():
    code = (
        "import sys, nashalign, nashalign.algorithms, nashalign.oracles;"
        "heavy = [m for m in ('transformers', 'peft', 'accelerate', 'datasets', 'cvxpy') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import nashalign pulled in: {out.stdout.strip()}"


def test_unknown_attribute_is_an_attribute_error():
    try:
        nashalign.not_a_name  # noqa: B018
    except AttributeError as err:
        assert "not_a_name" in str(err)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_readme_quickstart_runs():
    """The README quickstart block, executed as written."""
    import pathlib
    import re

    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    quick = [b for b in blocks if "# quickstart" in b]
    assert quick, "README.md has no ```python block marked '# quickstart'"
    exec(compile(quick[0], "README-quickstart", "exec"), {})


def test_readme_python_imports_resolve():
    """Every `from nashalign... import ...` line in the README's Python blocks names something that exists.

    The LLM and oracle examples need a hub model to run; their imports must still be true.
    """
    import importlib
    import pathlib
    import re

    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    lines = [m for b in blocks for m in re.findall(r"^from (nashalign[\w.]*) import ([^\n#]+)", b, flags=re.M)]
    assert len(lines) >= 3
    for module, names in lines:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.strip("() ").split(",")):
            assert getattr(mod, name, None) is not None, f"README imports {name} from {module}, which has no such name"
