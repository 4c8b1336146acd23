"""Writers and tables of :mod:`nashalign.reporting`: JSON/CSV files, number formatting, markdown tables, constants."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PLOT_FLOOR", "TINY", "EQUILIBRIUM_MAX_STORED", "SUPPORT_THRESHOLD", "METRICS", "write_json", "read_json", "write_csv", "format_number", "markdown_table"]

#: Values below this are drawn at this height on log-scale plots (exact zeros, float round-off).
PLOT_FLOOR = 1e-16

#: Tables print metric values below this as ``~0`` (KL and exploitability round-off around 0).
TINY = 1e-15

#: ``run.json`` stores the target equilibrium's probabilities when it has at most this many entries.
EQUILIBRIUM_MAX_STORED = 10_000

#: Probabilities above this count as the equilibrium's support in tables.
SUPPORT_THRESHOLD = 1e-6

#: metric -> (history column of the last iterate, of the average, scale, axis label)
METRICS: dict[str, tuple[str, str, float, str]] = {
    "expl": ("expl_last", "expl_avg", 1.0, "exploitability"),
    "reg_expl": ("reg_expl_last", "reg_expl_avg", 1.0, "regularized exploitability"),
    "dg": ("reg_expl_last", "reg_expl_avg", 2.0, "DG_tau (regularized duality gap)"),
    "kl_target": ("kl_target_last", "kl_target_avg", 1.0, "KL(target || pi)"),
}



def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (numpy arrays/scalars converted; NaN kept as ``NaN``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=1, default=str, allow_nan=True))
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json` (or :meth:`SolveResult.to_json`)."""
    return json.loads(Path(path).read_text())


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV; ``columns`` fixes the order (default: keys in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: _csv_value(r.get(c)) for c in columns})
    return path


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # full precision, round-trips through float()
    return v


def format_number(v: Any, digits: int = 3, tiny: float | None = None) -> str:
    """Compact human formatting: ``0``, ``0.125``, ``3.4e-07``, ``nan`` -> ``-``; other types via ``str``.

    With ``tiny``, floats with ``|v| < tiny`` print as ``~0`` (round-off around an exact zero).
    """
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "-"
        if x == 0:
            return "0"
        if tiny is not None and abs(x) < tiny:
            return "~0"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if 1e-3 <= abs(x) < 1e4:
            return f"{x:.{digits}g}"
        return f"{x:.{max(digits - 2, 0)}e}" if digits > 2 else f"{x:.0e}"
    return str(v)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    digits: int = 3,
    tiny: float | None = None,
) -> str:
    """A GitHub-flavoured markdown table.

    Args:
        rows: one mapping per row.
        columns: keys, or ``(key, header)`` pairs; missing values print as ``-``.
        digits: significant digits for floats (:func:`format_number`).
        tiny: floats below this in absolute value print as ``~0``.

    Examples:
        >>> print(markdown_table([{"alg": "egpo", "kl": 1.5e-9}], ["alg", ("kl", "KL")]))
        | alg | KL |
        |---|---|
        | egpo | 1.5e-09 |
    """
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [format_number(r.get(k), digits, tiny).replace("|", "\\|") for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
