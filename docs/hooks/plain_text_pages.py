"""MkDocs hook: show the plain-text SPEC verbatim, keeping its headings (and so the table of contents).

``docs/SPEC.md`` is written as ASCII mathematics under Markdown headings: ``pi*_tau``, ``[l - m](y)`` and
``a_t * b`` would turn into emphasis and links if rendered as Markdown.  For the pages listed in ``PAGES``,
every run of lines between headings (and outside tables) is put in a ``text`` code block, so the site
shows exactly the characters of the file; headings and pipe tables stay Markdown.  The file itself is not
changed (it is read as plain text in the repository too).
"""

from __future__ import annotations

from typing import Any

PAGES = {"SPEC.md"}


def _flush(run: list[str], out: list[str]) -> None:
    while run and not run[0].strip():
        run.pop(0)
    while run and not run[-1].strip():
        run.pop()
    if not run:
        return
    if all(set(line.strip()) <= {"-"} for line in run):  # a horizontal rule of dashes
        out += ["", "---", ""]
    else:
        out += ["", "```text", *run, "```", ""]
    run.clear()


def verbatim(markdown: str) -> str:
    """Headings and ``|`` tables kept, every other run of lines fenced as ``text``."""
    out: list[str] = []
    run: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("#") or line.startswith("|"):
            _flush(run, out)
            if line.startswith("#"):
                out += [line, ""]
            else:
                if out and out[-1] and not out[-1].startswith("|"):
                    out.append("")
                out.append(line)
        else:
            if out and out[-1].startswith("|"):
                out.append("")
            run.append(line)
    _flush(run, out)
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return verbatim(markdown) if page.file.src_uri in PAGES else markdown
