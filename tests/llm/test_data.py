"""load_prompts from lists, JSONL/JSON/CSV/TXT files and `datasets` (local json via load_dataset)."""

from __future__ import annotations

import json

import pytest

from nashalign.llm.data import load_prompts

RECORDS = [{"prompt": "Pick a color:", "id": 1}, {"prompt": "Pick a number:", "id": 2}, {"prompt": "Hi", "id": 3}]
PROMPTS = [r["prompt"] for r in RECORDS]


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_lists():
    assert load_prompts(PROMPTS) == PROMPTS
    assert load_prompts(RECORDS) == PROMPTS
    assert load_prompts(RECORDS, limit=2) == PROMPTS[:2]
    chat = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]}]
    (prompt,) = load_prompts(chat, field="messages")  # the whole conversation, not only its last user message
    assert prompt.messages == tuple(chat[0]["messages"]) and prompt == "system: s\nuser: Q?"


def test_jsonl_json_csv_txt(tmp_path):
    assert load_prompts(write_jsonl(tmp_path / "p.jsonl", RECORDS)) == PROMPTS
    (tmp_path / "p.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    assert load_prompts(tmp_path / "p.json") == PROMPTS
    (tmp_path / "p.csv").write_text('id,text\n1,"a, b"\n2,c\n', encoding="utf-8")
    assert load_prompts(str(tmp_path / "p.csv"), field="text") == ["a, b", "c"]
    (tmp_path / "p.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    assert load_prompts(tmp_path / "p.txt") == ["one", "two"]


def test_datasets_sources(tmp_path):
    import datasets

    path = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    cache = str(tmp_path / "hf_cache")
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache)
    assert load_prompts(ds) == PROMPTS
    assert load_prompts(datasets.DatasetDict({"test": ds}), split="test") == PROMPTS
    assert load_prompts("json", data_files=str(path), cache_dir=cache, limit=1) == PROMPTS[:1]
    with pytest.raises(KeyError, match="split 'train' not in"):
        load_prompts(datasets.DatasetDict({"test": ds}))
    with pytest.raises(KeyError, match="columns: \\['prompt', 'id'\\]"):
        load_prompts(ds, field="question")


def test_clear_errors(tmp_path):
    with pytest.raises(KeyError, match="field 'question' not found .* available fields: \\['id', 'prompt'\\]"):
        load_prompts(write_jsonl(tmp_path / "p.jsonl", RECORDS), field="question")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_prompts(tmp_path / "empty.jsonl")
    (tmp_path / "p.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(KeyError, match="column 'prompt' not found"):
        load_prompts(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="must be strings"):
        load_prompts([{"prompt": 3}])
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts([])
