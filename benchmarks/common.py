"""Shared by the benchmark scripts: machine and library info, best-of-k timing, JSON and markdown output."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
#: Where a run writes unless asked to replace the committed results (git-ignored).
SCRATCH = REPO / "outputs" / "benchmarks"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_slug() -> str:
    """A file-name-safe machine name: CPU model and core count, e.g. ``amd-epyc-2c``."""
    model = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", cpu_model().lower())
    model = "-".join(re.findall(r"[a-z0-9]+", model)[:4]) or "cpu"
    return f"{model}-{os.cpu_count()}c"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions(names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def cuda_info() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False}
    return {"available": True, "name": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda}


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "cuda": cuda_info(),
    }


def best_of(fn: Callable[[], Any], repeat: int = 3, sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (seconds) and the last result; ``sync`` runs before each clock read."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def header(bench: str, extra_versions: list[str]) -> dict[str, Any]:
    return {
        "benchmark": bench,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine_info(),
        "versions": versions(["nashalign", "numpy", "scipy", "torch", *extra_versions]),
        "load_average_start": load_average(),
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def fmt_s(x: float | None) -> str:
    """Seconds with a unit that keeps 3 significant digits."""
    if x is None or not np.isfinite(x):
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.3g} µs"
    if x < 1:
        return f"{x * 1e3:.3g} ms"
    return f"{x:.3g} s"


def add_output_args(ap: Any) -> None:
    """``--write``, ``--machine`` and ``--no-write``: where a benchmark script puts its results."""
    ap.add_argument("--write", action="store_true",
                    help="write into benchmarks/results/ (the committed results), replacing a file of the same name")
    ap.add_argument("--machine", default=None,
                    help="name in the results file (default: CPU model and cores); naming it also means --write")
    ap.add_argument("--no-write", action="store_true", help="print only")  # fmt: skip


def publishing(args: Any) -> bool:
    """True when the user asked to write into ``benchmarks/results/`` (``--write`` or an explicit ``--machine``)."""
    return bool(getattr(args, "write", False) or getattr(args, "machine", None))


def results_dir(publish: bool) -> Path:
    """``benchmarks/results/`` when publishing, else the git-ignored scratch folder ``outputs/benchmarks/``."""
    return RESULTS if publish else SCRATCH


def write(name: str, machine: str, record: dict[str, Any], markdown: str, *, publish: bool = False) -> tuple[Path, Path]:
    """Write ``<name>-<machine>.json`` and ``.md``; returns both paths.

    Into ``benchmarks/results/`` only with ``publish`` (the script's ``--write`` or ``--machine``): a plain run
    never overwrites the committed results, it writes into ``outputs/benchmarks/`` and says so.
    """
    out = results_dir(publish)
    out.mkdir(parents=True, exist_ok=True)
    record["load_average_end"] = load_average()
    js = out / f"{name}-{machine}.json"
    md = out / f"{name}-{machine}.md"
    js.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n")
    md.write_text(markdown + "\n")
    if not publish:
        import sys

        print(f"(results written to {out}, not to benchmarks/results/: pass --write to replace the committed "
              "results)", file=sys.stderr)  # fmt: skip
    return js, md


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
