"""Every number the README and docs quote from a run, tied to the results file it comes from.

:data:`QUOTES` is the one table of quoted numbers: for each, the document, a regular expression that finds the
quote exactly once (its groups are the numbers), the results file under ``benchmarks/results/`` and, per group,
the JSON path of the value and how it is printed (:data:`FORMATS`).  A field may name more paths (``also``)
that must print the same: a row that says ``omd = inpo`` checks both runs.

    python benchmarks/docs_numbers.py --check     # exit 1 and list every quote that differs from its source
    python benchmarks/docs_numbers.py --write     # rewrite the quotes from the results files
    make docs-numbers                             # rerun the app presets (bench_apps.py --write), then --write

The results files come from ``benchmarks/bench_apps.py --write`` (the apps' presets: tabular demo, EGPO's
tabular comparison, the LM benchmark and ``make demo``'s LM run).  ``tests/test_docs_numbers.py`` runs the
check, so a quote that disagrees with its source fails the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MACHINE = "amd-epyc-2c"  # the machine every quoted run was measured on (README "Performance")


def _sci(x: float, digits: int = 1) -> str:
    """``7.5e-5``: scientific with ``digits`` decimals and no zero-padded exponent."""
    mant, exp = f"{x:.{digits}e}".split("e")
    return f"{mant}e{int(exp)}"


def _g3(x: float) -> str:
    """Three significant digits from 1e-3 up, ``7.5e-5`` below, ``~0`` under 1e-15 (round-off)."""
    if abs(x) < 1e-15:
        return "~0"
    return f"{x:.3g}" if abs(x) >= 1e-3 else _sci(x)


def _dur(x: float) -> str:
    """A duration with three significant digits: ``574 µs``, ``1.75 ms``, ``6.12 s``, ``3,330 s``."""
    if x < 1e-3:
        return f"{x * 1e6:.3g} µs"
    if x < 1:
        return f"{x * 1e3:.3g} ms"
    return f"{float(f'{x:.3g}'):,.0f} s" if x >= 1000 else f"{x:.3g} s"


def _ratio(x: float) -> str:
    """A speed-up: ``3.0`` below 10, else three significant digits with thousands separators (``1,660``)."""
    return f"{x:.1f}" if x < 10 else f"{float(f'{x:.3g}'):,.0f}"


def _short(x: float) -> str:
    """Two decimals from 0.1 up (``0.34``), ``2.9e-2`` below, ``~0`` under 1e-15."""
    if abs(x) < 1e-15:
        return "~0"
    return f"{x:.2f}" if abs(x) >= 0.1 else _sci(x)


#: How a value is printed in the docs.
FORMATS: dict[str, Callable[[Any], str]] = {
    "f3": lambda x: f"{x:.3f}",
    "f4": lambda x: f"{x:.4f}",
    "int": lambda x: str(int(round(x))),
    "sec": lambda x: f"{x:.0f}",
    "f1": lambda x: f"{x:.1f}",
    "M0": lambda x: f"{x / 1e6:.0f}",
    "M2g": lambda x: f"{x / 1e6:.2g}",
    "f2": lambda x: f"{x:.2f}",
    "s2": lambda x: f"{x:.{max(0, 1 - math.floor(math.log10(abs(x))))}f}",
    "M1": lambda x: f"{x / 1e6:.1f}",
    "min": lambda x: f"{max(1, round(x / 60))}",
    "g3": _g3,
    "dur": _dur,
    "ratio": _ratio,
    "short": _short,
}


@dataclass(frozen=True)
class Field:
    """One quoted number: ``path`` in the results file, printed with ``fmt``; ``also``: paths that must agree.

    With ``div`` the number is ``value(path) / value(div)`` (a speed-up).  With ``where``, ``path`` names a
    list of records: the ones whose fields take the given values (``(("form", ("pg",)),)``) give their ``key``,
    printed as ``min-max`` (one value when they agree after formatting; exactly one record without ``span``).
    """

    path: tuple[str, ...]
    fmt: str
    also: tuple[tuple[str, ...], ...] = ()
    div: tuple[str, ...] | None = None
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    key: str = ""
    span: bool = False
    ratios: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Quote:
    """A quote in ``doc`` found by ``pattern`` (exactly one match; one regex group per field)."""

    doc: str
    pattern: str
    source: str
    fields: tuple[Field, ...]
    note: str = field(default="", compare=False)


def _src(part: str) -> str:
    return f"app_{part}-{MACHINE}.json"


def _row(label: str, cells: Sequence[str]) -> str:
    """A markdown table row starting with ``label``; each cell a regex with its groups."""
    return r"^\| " + re.escape(label) + r" \|" + "".join(f" {c} \\|" for c in cells) + r"$"


NUM = r"([~\d.e+-]+)"

# ----------------------------------------------------------------------------------------------- LM benchmark
LM_ROWS = {  # table label -> algorithm
    "nash_md": "nash_md", "egpo": "egpo", "omd": "omd", "inpo": "inpo", "online_ipo": "online_ipo",
    "omwu": "omwu", "nash_ema": "nash_ema", "mwu (tau = 0)": "mwu", "sppo (tau = 0)": "sppo",
    "dno (tau = 0)": "dno", "spo (tau = 0, pg form)": "spo", "mpo": "mpo", "comal": "comal",
    "nash_prox": "nash_prox", "onpo": "onpo", "apo (tau = 0)": "apo", "mnpo": "mnpo", "rspo": "rspo", "xpo": "xpo",
}  # fmt: skip


#: Rows that also quote a minimum over training (in parentheses).
LM_MIN = {"online_ipo": "kl_target", "spo": "exploitability"}


def _lm_table(doc: str) -> list[Quote]:
    out = []
    for label, alg in LM_ROWS.items():
        r = ("results", alg)
        fields = [Field((*r, "exploitability_before"), "f3"), Field((*r, "exploitability_after"), "f3"),
                  Field((*r, "kl_target_before"), "f3"), Field((*r, "kl_target_after"), "f3")]  # fmt: skip
        cells = [NUM, NUM, NUM, NUM, NUM]
        if alg in LM_MIN:  # the row also quotes the metric's minimum over training: "0.254 (min 0.058)"
            key = LM_MIN[alg]
            i = 1 if key == "exploitability" else 3
            cells[i] = NUM + r" \(min " + NUM + r"\)"
            fields.insert(i + 1, Field((*r, f"{key}_min"), "f3"))
        out.append(Quote(doc, _row(label, cells), _src("lm_benchmark"), (*fields, Field((*r, "queries"), "int"))))
    return out


def _lm_quotes() -> list[Quote]:
    wall = Field(("wall_s",), "sec")
    load = Field(("load_average_start", "0"), "f1")
    cpu = Field(("cpu_s",), "sec")
    eg = ("results", "egpo")
    nm = ("results", "nash_md")
    return [
        *_lm_table("README.md"),
        *_lm_table("docs/llm.md"),
        Quote("README.md", r"\+experiment=lm_benchmark`, (\d+) s wall \((\d+) s CPU\) on 2 CPU cores at load average ([\d.]+)",
              _src("lm_benchmark"), (wall, cpu, load)),  # fmt: skip
        Quote("docs/llm.md", r"The whole sweep took (\d+) s wall \((\d+) s CPU\) at load average ([\d.]+)",
              _src("lm_benchmark"), (wall, cpu, load)),  # fmt: skip
        Quote("conf/llm/experiment/lm_benchmark.yaml", r"# (\d+) s CPU for every registered algorithm on two CPU cores",
              _src("lm_benchmark"), (cpu,)),  # fmt: skip
        Quote("docs/llm.md", r'history\[-1\]\["exploitability"\]\)   # ([\d.]+) -> ([\d.]+)', _src("lm_benchmark"),
              (Field((*eg, "exploitability_before"), "f3"), Field((*eg, "exploitability_after"), "f3")),
              note="the quickstart runs the lm_benchmark preset's EGPO job"),  # fmt: skip
        Quote("README.md", r"Nash-MD: exploitability ([\d.]+) → ([\d.]+), KL ([\d.]+) → ([\d.]+)", _src("lm_demo"),
              (Field((*nm, "exploitability_before"), "f3"), Field((*nm, "exploitability_after"), "f3"),
               Field((*nm, "kl_target_before"), "f3"), Field((*nm, "kl_target_after"), "f3"))),  # fmt: skip
        Quote("conf/llm/experiment/lm_benchmark_demo.yaml", r"\((\d+) s CPU on a 2-core machine\)", _src("lm_demo"),
              (cpu,)),  # fmt: skip
    ]


# ----------------------------------------------------------------------------------------------- tabular presets
DEMO_ROWS = {  # README row label -> the algorithms it lists (all must print the same)
    "dno = mwu = spo = sppo (τ = 0)": ("dno", "mwu", "spo", "sppo"),
    "egpo (τ = 0.1)": ("egpo",),
    "inpo = omd (τ = 0.1)": ("inpo", "omd"),
    "omwu (τ = 0.1)": ("omwu",),
    "nash_ema": ("nash_ema",),
    "nash_md (constant η: `stalled` at its biased point)": ("nash_md",),
    "online_ipo": ("online_ipo",),
}


def _demo_quotes() -> list[Quote]:
    out = []
    for label, algs in DEMO_ROWS.items():
        fields = []
        for game in ("rps", "population", "random50"):
            for col in ("last", "avg"):
                paths = [("results", game, a, col) for a in algs]
                fields.append(Field(paths[0], "g3", tuple(paths[1:])))
        cells = [r"[^|]+?", *[f"{NUM} / {NUM}"] * 3]
        out.append(Quote("README.md", _row(label, cells), _src("tabular_demo"), tuple(fields)))
    wall = Field(("wall_s",), "sec")
    load = Field(("load_average_start", "0"), "f1")
    cpu = Field(("cpu_s",), "sec")
    out += [
        Quote("README.md", r"1500 exact steps, (\d+) runs in (\d+) s wall \((\d+) s CPU\) at load average ([\d.]+)\)",
              _src("tabular_demo"), (Field(("runs",), "int"), wall, cpu, load)),  # fmt: skip
        Quote("tabular/README.md", r"`make demo` \(a multirun by itself, (\d+) s CPU\)", _src("tabular_demo"), (cpu,)),
        Quote("tabular/README.md", r"It took (\d+) s wall \((\d+) s CPU\) on 2 cores at load average ([\d.]+)", _src("tabular_demo"),
              (wall, cpu, load)),  # fmt: skip
    ]
    return out


EGPO_BASELINES = ("oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo")
EGPO_ROWS = {"0.1": ("0.1", "0.1, 1000, 0.1"), "0.01": ("0.01", "0.01, 5000, 0.02"), "0.001": ("0.001", "0.001, 1e5, 2e-4")}


def _egpo_quotes() -> list[Quote]:
    out = []
    for beta, (readme_label, tab_label) in EGPO_ROWS.items():
        fields = tuple(Field(("results", beta, b, col), "short") for b in EGPO_BASELINES for col in ("ctx_median", "ctx_max"))
        out.append(Quote("README.md", _row(readme_label, [f"{NUM}/{NUM} \\[[^\\]]*\\]"] * 5), _src("egpo_tabular"), fields))
        out.append(Quote("tabular/README.md", _row(tab_label, [f"{NUM} / {NUM}"] * 5), _src("egpo_tabular"), fields))
    wall, cpu = Field(("wall_s",), "sec"), Field(("cpu_s",), "sec")
    out += [
        Quote("README.md", r"EGPO's exact tabular comparison \((\d+) s CPU\)", _src("egpo_tabular"), (cpu,)),
        Quote("tabular/README.md", r"the whole preset took (\d+) s wall \((\d+) s CPU\) at load average ([\d.]+)",
              _src("egpo_tabular"), (wall, cpu, Field(("load_average_start", "0"), "f1"))),  # fmt: skip
        Quote("conf/tabular/experiment/egpo_tabular.yaml", r"\((\d+) s CPU on 2 cores\)", _src("egpo_tabular"),
              (cpu,)),  # fmt: skip
    ]
    return out


# ----------------------------------------------------------------------------------------------- bench_tabular
#: README "Exact solvers against cvxpy" rows: label -> (index in ``regularized``, nashalign configuration)
SPEED_ROWS = {
    "1 × 10": (0, "egpo numpy f64"), "100 × 10": (1, "egpo numpy f64"), "1 × 100": (3, "egpo numpy f64"),
    "100 × 100": (4, "egpo numpy f64"), "1000 × 100, P in float32": (5, "egpo numpy f64, P f32"),
    "1 × 1000": (6, "egpo numpy f64"), "100 × 1000": (7, "egpo numpy f64"),
}  # fmt: skip


def _peer(i: int, name: str, file_key: str = "minimax") -> tuple[str, ...]:
    return (file_key, str(i), "peers", name, "extrapolated_s")


def _minimax_quotes() -> list[Quote]:
    """README: solve_nash against nashpy's LP and OpenSpiel's, recorded run (8 sizes) and the n <= 100 rerun."""
    ours = "nashalign solve_nash"

    def over(peer: str, idx: Sequence[int]) -> Field:
        return Field((), "s2", ratios=tuple((_peer(i, peer), _peer(i, ours)) for i in idx))

    def one(peer: str, i: int, inverse: bool = False) -> Field:
        a, b = _peer(i, peer), _peer(i, ours)
        return Field(b, "s2", div=a) if inverse else Field(a, "s2", div=b)

    full = range(8)  # n in 10, 100, 1000 x C in 1, 100, 1000 (8 of 9 fit in memory)
    recorded = Quote("README.md", r"runs at ([\d.-]+)× nashpy's LP speed in the recorded run \(nashpy faster for n ≥ 100: "
                                  r"([\d.]+)× on one 100-response\ngame, where the support polish tried up to nine "
                                  r"candidate supports\) and ([\d.-]+)× OpenSpiel's", f"tabular-{MACHINE}.json",
                     (over("nashpy LP", full), one("nashpy LP", 3, inverse=True), over("OpenSpiel LP", full)))  # fmt: skip
    rerun = Quote("README.md", r"gives 1 × 100 in\n(\S+ \S+) = ([\d.]+)× nashpy, ([\d.]+)× OpenSpiel; 100 × 100 ([\d.]+)× / "
                               r"([\d.]+)×; n = 10: ([\d.]+)× / ([\d.]+)× \(1 game\) and ([\d.]+)× / ([\d.]+)×\s"
                               r"\(100 games\)", f"tabular-{MACHINE}-minimax-n100.json",
                  (Field(_peer(2, ours), "dur"), one("nashpy LP", 2), one("OpenSpiel LP", 2), one("nashpy LP", 3),
                   one("OpenSpiel LP", 3), one("nashpy LP", 0), one("OpenSpiel LP", 0), one("nashpy LP", 1),
                   one("OpenSpiel LP", 1)))  # fmt: skip
    return [recorded, rerun]


def _speed_quotes() -> list[Quote]:
    src = f"tabular-{MACHINE}.json"
    out = []
    for label, (i, cfg) in SPEED_ROWS.items():
        ours = ("regularized", str(i), "nashalign", cfg, "seconds")
        cvx = ("regularized", str(i), "cvxpy", "extrapolated_s")
        out.append(Quote("README.md", _row(label, [r"(\S+ \S+)", r"(\S+ \S+)", r"(\S+)×"]), src,
                         (Field(ours, "dur"), Field(cvx, "dur"), Field(cvx, "ratio", div=ours))))  # fmt: skip
    runs = ("throughput", "5", "runs")  # C = 1000, n = 100

    def gbs(backend: str) -> Field:
        return Field(runs, "f1", where=(("backend", (backend,)), ("algorithm", ("egpo",))), key="bandwidth_gbs")

    out.append(Quote("README.md", r"reads P at ([\d.]+) GB/s effective at 1000 × 100, against ([\d.]+) GB/s measured "
                                  r"machine\nbandwidth \(one block: ([\d.]+) GB/s\)", src,
                     (gbs("numpy f64"), Field(("bandwidth", "read_best"), "f1"), gbs("numpy f64 one block"))))  # fmt: skip
    out += _minimax_quotes()
    ours = ("regularized", "5", "nashalign", "egpo numpy f64")
    cvx = ("regularized", "5", "cvxpy", "extrapolated_s")
    out.append(Quote("README.md", _row("**1000 × 100**", [r"\*\*(\S+ \S+)\*\* \(blocks of (\d+) contexts\)",
                                                        r"(\S+ \S+)", r"\*\*(\S+)×\*\*"]), src,
                     (Field((*ours, "seconds"), "dur"), Field((*ours, "context_block"), "int"), Field(cvx, "dur"),
                      Field(cvx, "ratio", div=(*ours, "seconds"))),
                     ))  # fmt: skip
    return out


def _losses_quotes() -> list[Quote]:
    """README "Loss + backward": pairs per second of the loss forms, CPU float32 (bench_losses.py)."""
    base = (("device", ("cpu",)), ("dtype", ("f32",)))
    others = ("dno", "egpo", "inpo", "mwu", "nash_ema", "nash_md", "omd", "omwu", "online_ipo", "spo", "sppo")

    def sel(forms: tuple[str, ...], algs: tuple[str, ...], fmt: str = "M0", span: bool = True) -> Field:
        return Field(("results",), fmt, where=(*base, ("form", forms), ("algorithm", algs)), key="pairs_per_second",
                     span=span)  # fmt: skip

    regression = tuple(a for a in others if a not in ("dno", "inpo"))
    pg = tuple(a for a in others if a != "egpo")
    pattern = (r"CPU float32\): ([\d-]+) M pairs/s for the pairwise-regression forms \(DNO's (\d+) M and INPO's (\d+) M "
               r"aside\), ([\d-]+) M for the policy-gradient forms since the\nleave-one-out baseline \(EGPO's two-phase "
               r"pg ([\d.]+) M\), ([\d-]+) M for the logistic and contrastive forms")
    return [Quote("README.md", pattern, f"losses-{MACHINE}.json", (
        sel(("regression",), regression), sel(("regression",), ("dno",), span=False),
        sel(("regression",), ("inpo",), span=False), sel(("pg",), pg), sel(("pg",), ("egpo",), "M1", span=False),
        sel(("logistic", "contrastive"), others),
    ))]  # fmt: skip


def _peers_quotes() -> list[Quote]:
    """README "LLM trainers against TRL": ratios nashalign / TRL per model (bench_llm_peers.py)."""
    src = f"llm_peers-{MACHINE}.json"

    def ratio(model: str, pair: str, key: str) -> Field:
        return Field(("throughput", model, "ratios"), "f2", where=(("pair", (pair,)),), key=key)

    def size(model: str) -> Field:
        return Field(("throughput", model, "model", "parameters"), "M2g")

    keys = ("samples_per_s", "steps_per_s", "memory")
    out = []
    nash = "nash_md (regression) / TRL NashMDTrainer"
    for label, model in (("Nash-MD / TRL 1.13 `NashMDTrainer` (mixture sampler fixed, see below)", "tiny"),
                         ("Nash-MD / TRL 1.13 `NashMDTrainer` (mixture sampler fixed)", "small")):  # fmt: skip
        cells = [r"([\d.]+) M", r"\*\*([\d.]+)\*\*", r"([\d.]+)", r"([\d.]+)"]
        out.append(Quote("README.md", _row(label, cells), src, (size(model), *(ratio(model, nash, k) for k in keys))))
    for label, pair in (("online IPO", "online_ipo / TRL OnlineDPOTrainer(ipo)"), ("EGPO", "egpo / TRL OnlineDPOTrainer(ipo)")):
        row = f'{label} / TRL 1.16 `OnlineDPOTrainer(loss_type="ipo")`'
        cells = [r"([\d.]+) M / ([\d.]+) M"] + [r"([\d.]+) / ([\d.]+)"] * 3
        fields = [size("tiny"), size("small")] + [ratio(m, pair, k) for k in keys for m in ("tiny", "small")]
        out.append(Quote("README.md", _row(row, cells), src, tuple(fields)))
    return out


def _correctness_quotes() -> list[Quote]:
    """README "Correctness next to TRL": the rock-paper-scissors LM run of bench_llm_peers.py."""
    src = f"llm_peers-{MACHINE}.json"
    rps = ("correctness", "rps")
    fp = (*rps, "fixed_points_lm_mu")
    runs = (*rps, "runs")
    theory = (*runs, "nashalign NashMD (theory mixture eta*tau=0.05)", "final")
    half = (*runs, "nashalign NashMD(mixture=0.5) = TRL default", "final")
    trl = (*runs, "TRL 1.0.0 NashMDTrainer(mixture_coef=0.5), pairwise judge, mixture-cache patch", "second_half_mean")
    rows = [
        ("exact π*_τ (target)", [NUM, "0"], [Field((*fp, "theory", "exploitability"), "f3")]),
        ("exact fixed point of mixture 0.5", [NUM, NUM],
         [Field((*fp, "mixture=0.5", "exploitability"), "f3"), Field((*fp, "mixture=0.5", "kl_target"), "f3")]),
        ("nashalign Nash-MD (mixture ητ, as in the theorem)", [rf"\*\*{NUM}\*\*", rf"\*\*{NUM}\*\*"],
         [Field((*theory, "exploitability"), "f3"), Field((*theory, "kl_target"), "f3")]),
        ("nashalign Nash-MD, mixture 0.5", [NUM, NUM],
         [Field((*half, "exploitability"), "f3"), Field((*half, "kl_target"), "f3")]),
        ("TRL 1.0.0 `NashMDTrainer(mixture_coef=0.5)`, pairwise judge, mixture patch", [NUM + r" \(2nd-half mean\)", NUM],
         [Field((*trl, "exploitability"), "f3"), Field((*trl, "kl_target"), "f3")]),
    ]  # fmt: skip
    return [Quote("README.md", _row(label, cells), src, tuple(fields)) for label, cells, fields in rows]


QUOTES: list[Quote] = [
    *_correctness_quotes(),
    *_lm_quotes(), *_demo_quotes(), *_egpo_quotes(), *_speed_quotes(), *_losses_quotes(), *_peers_quotes(),
]  # fmt: skip


# ----------------------------------------------------------------------------------------------- check / write
def lookup(data: Any, path: Sequence[str]) -> Any:
    """``data[path[0]][path[1]]...`` with a message naming the missing key."""
    cur = data
    for i, key in enumerate(path):
        if isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
            continue
        if not isinstance(cur, dict) or key not in cur:
            have = sorted(cur)[:12] if isinstance(cur, dict) else type(cur).__name__
            raise KeyError(f"{'.'.join(path[: i + 1])} not in the results file (have {have})")
        cur = cur[key]
    return cur


@dataclass
class Finding:
    """A quote whose text differs from its source (or that cannot be checked: ``problem``)."""

    quote: Quote
    quoted: list[str]
    expected: list[str]
    problem: str = ""

    def __str__(self) -> str:
        where = f"{self.quote.doc}: /{self.quote.pattern[:70]}/"
        if self.problem:
            return f"{where}\n    {self.problem}"
        diff = [f"{q!r} should be {e!r}" for q, e in zip(self.quoted, self.expected) if q != e]
        return f"{where} (from {self.quote.source})\n    " + "; ".join(diff)


def expected_values(quote: Quote, results: Path = RESULTS) -> list[str]:
    """The texts the quote's fields should read, from its results file (all ``also`` paths must agree)."""
    path = results / quote.source
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run benchmarks/bench_apps.py --write (make docs-numbers)")
    data = json.loads(path.read_text())
    out = []
    for f in quote.fields:
        if f.where:
            out.append(_selected(data, f))
            continue
        if f.ratios:  # the min-max range of several ratios
            vals = [float(lookup(data, a)) / float(lookup(data, b)) for a, b in f.ratios]
            lo, hi = FORMATS[f.fmt](min(vals)), FORMATS[f.fmt](max(vals))
            out.append(lo if lo == hi else f"{lo}-{hi}")
            continue
        den = float(lookup(data, f.div)) if f.div is not None else 1.0
        texts = {FORMATS[f.fmt](float(lookup(data, p)) / den) for p in (f.path, *f.also)}
        if len(texts) > 1:
            raise ValueError(f"{'.'.join(f.path)} and {[ '.'.join(p) for p in f.also]} print differently: {sorted(texts)}; "
                             "the row claims they are equal (split the row)")  # fmt: skip
        out.append(texts.pop())
    return out


def _selected(data: Any, f: Field) -> str:
    """The ``where`` records' ``key`` values, formatted as one value or a ``min-max`` range."""
    rows = [r for r in lookup(data, f.path) if all(r.get(k) in v for k, v in f.where)]
    vals = [float(r[f.key]) for r in rows if f.key in r]
    if not vals or (len(vals) > 1 and not f.span):
        raise LookupError(f"{len(vals)} records of {'.'.join(f.path)} match {dict(f.where)} (with {f.key!r})")
    lo, hi = FORMATS[f.fmt](min(vals)), FORMATS[f.fmt](max(vals))
    return lo if lo == hi else f"{lo}-{hi}"


def _match(quote: Quote, text: str) -> re.Match[str]:
    matches = list(re.finditer(quote.pattern, text, flags=re.MULTILINE))
    if len(matches) != 1:
        raise LookupError(f"the pattern matches {len(matches)} times (must be exactly once)")
    if len(matches[0].groups()) != len(quote.fields):
        raise LookupError(f"{len(matches[0].groups())} groups for {len(quote.fields)} fields")
    return matches[0]


def check(quotes: Sequence[Quote] = QUOTES, root: Path = REPO, results: Path = RESULTS) -> list[Finding]:
    """Every quote whose text differs from its source, or that cannot be found or sourced."""
    findings = []
    for q in quotes:
        try:
            m = _match(q, (root / q.doc).read_text(encoding="utf-8"))
            expected = expected_values(q, results)
        except (LookupError, KeyError, ValueError, FileNotFoundError) as err:
            findings.append(Finding(q, [], [], problem=str(err)))
            continue
        quoted = list(m.groups())
        if quoted != expected:
            findings.append(Finding(q, quoted, expected))
    return findings


def write(quotes: Sequence[Quote] = QUOTES, root: Path = REPO, results: Path = RESULTS) -> list[str]:
    """Rewrite every quote from its source; returns the documents changed.  Unfindable quotes raise."""
    texts: dict[str, str] = {}
    for q in quotes:
        text = texts.get(q.doc) or (root / q.doc).read_text(encoding="utf-8")
        m = _match(q, text)
        expected = expected_values(q, results)
        for i in reversed(range(len(expected))):
            a, b = m.span(i + 1)
            text = text[:a] + expected[i] + text[b:]
        texts[q.doc] = text
    changed = []
    for doc, text in texts.items():
        if (root / doc).read_text(encoding="utf-8") != text:
            (root / doc).write_text(text, encoding="utf-8")
            changed.append(doc)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a quote differs from its source")
    mode.add_argument("--write", action="store_true", help="rewrite the quotes from the results files")
    args = ap.parse_args(argv)
    if args.write:
        changed = write()
        print(f"{len(QUOTES)} quotes; rewrote {', '.join(changed) if changed else 'nothing (all current)'}")
        return 0
    findings = check()
    for f in findings:
        print(f)
    n_fields = sum(len(q.fields) for q in QUOTES)
    print(f"{len(QUOTES)} quotes ({n_fields} numbers): {len(findings)} differ from their source" if findings
          else f"{len(QUOTES)} quotes ({n_fields} numbers) match their results files")  # fmt: skip
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
