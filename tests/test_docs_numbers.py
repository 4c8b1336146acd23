"""Every number the README and docs quote from a run agrees with its results file (benchmarks/docs_numbers.py).

A quote that differs from its source fails here; ``make docs-numbers`` (or ``python benchmarks/docs_numbers.py
--write`` after ``benchmarks/bench_apps.py --write``) regenerates them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


dn = _load("docs_numbers")


def test_every_quoted_number_matches_its_results_file():
    findings = dn.check()
    assert not findings, "quotes that differ from benchmarks/results/ (run make docs-numbers):\n" + "\n".join(
        map(str, findings)
    )


def test_the_quotes_cover_the_documents_and_numbers_of_issue_12():
    docs = {q.doc for q in dn.QUOTES}
    assert {"README.md", "docs/llm.md", "tabular/README.md"} <= docs
    sources = {q.source for q in dn.QUOTES}
    assert {f"app_{p}-{dn.MACHINE}.json" for p in ("lm_benchmark", "lm_demo", "tabular_demo", "egpo_tabular")} <= sources
    # the EGPO preset's duration is quoted in three places, all from one file
    egpo_wall = [q for q in dn.QUOTES if q.source.startswith("app_egpo_tabular")
                 and {f.path for f in q.fields} & {("wall_s",), ("cpu_s",)}]  # fmt: skip
    assert {q.doc for q in egpo_wall} == {"README.md", "tabular/README.md", "conf/tabular/experiment/egpo_tabular.yaml"}


def _mini(tmp_path, doc_text, data, quotes):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text(json.dumps(data))
    (tmp_path / "doc.md").write_text(doc_text)
    return dict(quotes=quotes, root=tmp_path, results=tmp_path / "results")


def test_check_finds_a_stale_quote_and_write_fixes_it(tmp_path):
    q = dn.Quote("doc.md", r"took (\d+) s wall, KL ([\d.]+)", "r.json",
                 (dn.Field(("wall_s",), "sec"), dn.Field(("res", "kl"), "f3")))  # fmt: skip
    kw = _mini(tmp_path, "The sweep took 31 s wall, KL 0.052 at the end.\n", {"wall_s": 122.4, "res": {"kl": 0.0710}}, [q])
    (finding,) = dn.check(**kw)
    assert finding.quoted == ["31", "0.052"] and finding.expected == ["122", "0.071"]
    assert "'31' should be '122'" in str(finding)
    assert dn.write(**kw) == ["doc.md"]
    assert (tmp_path / "doc.md").read_text() == "The sweep took 122 s wall, KL 0.071 at the end.\n"
    assert dn.check(**kw) == [] and dn.write(**kw) == []


@pytest.mark.parametrize("text, problem", [("no quote here\n", "matches 0 times"), ("took 1 s wall; took 2 s wall\n", "matches 2 times")])
def test_a_quote_must_be_found_exactly_once(tmp_path, text, problem):
    q = dn.Quote("doc.md", r"took (\d+) s wall", "r.json", (dn.Field(("wall_s",), "sec"),))
    (finding,) = dn.check(**_mini(tmp_path, text, {"wall_s": 1.0}, [q]))
    assert problem in finding.problem


def test_missing_key_and_missing_file_are_reported(tmp_path):
    q = dn.Quote("doc.md", r"took (\d+) s wall", "r.json", (dn.Field(("nope",), "sec"),))
    kw = _mini(tmp_path, "took 1 s wall\n", {"wall_s": 1.0}, [q])
    (finding,) = dn.check(**kw)
    assert "nope not in the results file" in finding.problem
    q2 = dn.Quote("doc.md", r"took (\d+) s wall", "other.json", (dn.Field(("wall_s",), "sec"),))
    (finding,) = dn.check(quotes=[q2], root=tmp_path, results=tmp_path / "results")
    assert "bench_apps.py --write" in finding.problem


def test_a_row_that_lists_several_runs_checks_all_of_them(tmp_path):
    q = dn.Quote("doc.md", r"\| omd = inpo \| ([~\d.e-]+) \|", "r.json",
                 (dn.Field(("omd",), "g3", (("inpo",),)),))  # fmt: skip
    kw = _mini(tmp_path, "| omd = inpo | 0.128 |\n", {"omd": 0.128, "inpo": 0.131}, [q])
    (finding,) = dn.check(**kw)
    assert "print differently" in finding.problem and "split the row" in finding.problem


def test_formats():
    f = dn.FORMATS
    assert f["g3"](7.5e-5) == "7.5e-5" and f["g3"](0.00902) == "0.00902" and f["g3"](3e-17) == "~0"
    assert f["short"](0.304) == "0.30" and f["short"](0.029) == "2.9e-2" and f["short"](1e-16) == "~0"
    assert f["f3"](0.1163) == "0.116" and f["int"](2880.0) == "2880" and f["min"](230) == "4" and f["min"](10) == "1"


def test_a_range_over_selected_records(tmp_path):
    rows = [{"form": "pg", "alg": a, "v": v} for a, v in (("a", 24.1e6), ("b", 25.4e6), ("c", 13.5e6))]
    rows.append({"form": "regression", "alg": "a", "v": 50e6})
    f_range = dn.Field(("rows",), "M0", where=(("form", ("pg",)), ("alg", ("a", "b"))), key="v", span=True)
    f_one = dn.Field(("rows",), "M1", where=(("form", ("pg",)), ("alg", ("c",))), key="v")
    q = dn.Quote("doc.md", r"pg: ([\d-]+) M \(c: ([\d.]+) M\)", "r.json", (f_range, f_one))
    kw = _mini(tmp_path, "pg: 20-30 M (c: 13.5 M)\n", {"rows": rows}, [q])
    (finding,) = dn.check(**kw)
    assert finding.expected == ["24-25", "13.5"]
    bad = dn.Field(("rows",), "M0", where=(("form", ("pg",)),), key="v")  # three records, no span
    (finding,) = dn.check(quotes=[dn.Quote("doc.md", r"pg: ([\d-]+) M", "r.json", (bad,))], root=tmp_path,
                          results=tmp_path / "results")  # fmt: skip
    assert "3 records" in finding.problem


def test_ratio_ranges_and_two_significant_digits(tmp_path):
    data = {"a": [{"t": 2.0}, {"t": 6.0}], "b": [{"t": 1.0}, {"t": 4.0}]}
    ratios = tuple((("a", str(i), "t"), ("b", str(i), "t")) for i in range(2))
    q = dn.Quote("doc.md", r"at ([\d.-]+)× the peer", "r.json", (dn.Field((), "s2", ratios=ratios),))
    (finding,) = dn.check(**_mini(tmp_path, "at 1-9× the peer\n", data, [q]))
    assert finding.expected == ["1.5-2.0"]
    assert [dn.FORMATS["s2"](x) for x in (0.697, 0.432, 1.61, 6.956, 26.3)] == ["0.70", "0.43", "1.6", "7.0", "26"]
