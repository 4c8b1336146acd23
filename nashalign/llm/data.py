"""Prompts for training and evaluation, from local files, Python lists or ``datasets``.

``load_prompts(source, field="prompt")`` accepts:

* a list/tuple of strings, or of dicts holding ``field``;
* a local ``.jsonl`` file (one JSON object per line), ``.json`` (an array of objects, or JSON lines),
  ``.csv`` / ``.tsv`` (header row naming ``field``), ``.txt`` (one prompt per non-empty line), or a binary
  ``.parquet`` / ``.arrow`` table (read through ``datasets``), chosen by the file's extension;
* a ``datasets.Dataset`` / ``DatasetDict`` object;
* anything else: a name or path given to ``datasets.load_dataset(source, split=split)`` (Hub id,
  local dataset directory or script).

A value that is a chat (a list of ``{"role", "content"}`` messages; also a record's ``messages`` entry when it
has no ``field``) yields a :class:`ChatPrompt`: the whole conversation up to its last user message, which the
policy's chat template receives whole (the string value, what an oracle sees, is the conversation as text).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["load_prompts", "ChatPrompt"]

_TEXT_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".txt"}
_BINARY_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}


class ChatPrompt(str):
    """A prompt that is a conversation: a ``str`` (``"role: content"`` lines, for oracles and logs) that keeps
    its ``messages`` for the chat template (:meth:`~nashalign.llm.policy.CausalLMPolicy.format_prompts`)."""

    messages: tuple[dict[str, str], ...]

    def __new__(cls, messages: Sequence[Mapping[str, Any]]) -> ChatPrompt:
        msgs = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in messages)
        obj = super().__new__(cls, "\n".join(f"{m['role']}: {m['content']}" for m in msgs))
        obj.messages = msgs
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChatPrompt, (list(self.messages),))


def load_prompts(
    source: Any,
    *,
    field: str = "prompt",
    split: str = "train",
    limit: int | None = None,
    **load_dataset_kwargs: Any,
) -> list[str]:
    """A list of prompt strings from ``source`` (see the module docstring).

    Args:
        source: list, file path, ``datasets`` object, or ``load_dataset`` name/path.
        field: the column/key holding the prompt (ignored for lists of strings and ``.txt`` files).
        split: the split for ``datasets`` sources.
        limit: keep the first ``limit`` prompts.
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (e.g. ``data_files=...``).

    Raises:
        FileNotFoundError: a path-like source with a file suffix that does not exist.
        KeyError: ``field`` is missing (the message lists the available fields).
        ValueError: no prompts, a non-string prompt, or a bad ``limit``.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}.")
    label = _label(source)
    if isinstance(source, (list, tuple)):
        records: Iterable[Any] = source
        prompts = _from_records(records, field, label)
    elif isinstance(source, (str, os.PathLike)) and _is_local_file(source):
        prompts = _from_file(os.fspath(source), field)
    elif _is_hf_dataset(source):
        prompts = _from_dataset(source, field, split, label)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.splitext(path)[1].lower() in _TEXT_SUFFIXES and not os.path.exists(path):
            raise FileNotFoundError(f"prompt file {path!r} does not exist.")
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - in the llm extra
            raise ImportError(f"loading {path!r} needs the datasets package: pip install 'nashalign[llm]'.") from err
        ds = datasets.load_dataset(path, split=split, **load_dataset_kwargs)
        prompts = _from_dataset(ds, field, split, label)
    else:
        raise TypeError(
            f"load_prompts: unsupported source {type(source).__name__}; give a list, a file path, a datasets "
            "object or a load_dataset name."
        )
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise ValueError(f"no prompts found in {label}; it is empty.")
    return prompts


def _label(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return f"the {type(source).__name__} given"


def _is_local_file(source: Any) -> bool:
    return os.path.isfile(os.fspath(source))


def _is_hf_dataset(source: Any) -> bool:
    mod = type(source).__module__
    return mod.startswith("datasets")


def _as_prompt(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and all(isinstance(m, Mapping) for m in value):
        last_user = max((i for i, m in enumerate(value) if m.get("role") == "user"), default=None)
        bad = [m for m in value if not isinstance(m.get("content"), str) or "role" not in m]
        if last_user is None or bad:
            raise ValueError(f"{where}: a chat needs {{'role', 'content'}} messages with string content and a user turn.")
        return ChatPrompt(value[: last_user + 1])  # the conversation up to the turn the policy answers
    raise ValueError(f"{where}: prompts must be strings (or chats), got {type(value).__name__}: {str(value)[:60]!r}.")


def _from_records(records: Iterable[Any], field: str, label: str) -> list[str]:
    out: list[str] = []
    for i, rec in enumerate(records):
        if isinstance(rec, Mapping):
            if field not in rec and "messages" in rec:
                out.append(_as_prompt(rec["messages"], f"record {i} of {label}"))
                continue
            if field not in rec:
                raise KeyError(
                    f"field {field!r} not found in record {i} of {label}; available fields: {sorted(rec)}. "
                    f"Pass field=<name>."
                )
            out.append(_as_prompt(rec[field], f"record {i} of {label}"))
        else:
            out.append(_as_prompt(rec, f"entry {i} of {label}"))
    return out


def _from_file(path: str, field: str) -> list[str]:
    suffix = os.path.splitext(path)[1].lower()
    label = repr(path)
    if suffix in _BINARY_SUFFIXES:
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - in the llm extra
            raise ImportError(f"reading {label} needs the datasets package: pip install 'nashalign[llm]'.") from err
        ds = datasets.load_dataset(_BINARY_SUFFIXES[suffix], data_files=path, split="train")
        return _from_dataset(ds, field, "train", label)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if not text.strip():
        raise ValueError(f"prompt file {label} is empty.")
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise KeyError(f"column {field!r} not found in {label}; columns: {reader.fieldnames}. Pass field=<column>.")
        return _from_records(reader, field, label)
    if suffix in (".json", ".jsonl"):
        records: list[Any]
        stripped = text.lstrip()
        if suffix == ".json" and stripped.startswith("["):
            records = json.loads(text)
        else:
            records = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{label}, line {n}: not valid JSON ({err.msg}).") from err
        return _from_records(records, field, label)
    raise ValueError(
        f"unsupported prompt file type {suffix!r} for {label}; use .jsonl, .json, .csv, .tsv, .txt, .parquet or "
        ".arrow, or "
        "datasets.load_dataset."
    )


def _from_dataset(ds: Any, field: str, split: str, label: str) -> list[str]:
    if type(ds).__name__ in ("DatasetDict", "IterableDatasetDict"):
        if split not in ds:
            raise KeyError(f"split {split!r} not in {label}; splits: {list(ds.keys())}. Pass split=<name>.")
        ds = ds[split]
    columns = list(getattr(ds, "column_names", []) or [])
    if field not in columns and "messages" in columns:
        field = "messages"
    if field not in columns:
        raise KeyError(f"field {field!r} not found in {label}; columns: {columns}. Pass field=<column>.")
    return [_as_prompt(v, f"row {i} of {label}") for i, v in enumerate(ds[field])]
