"""Regression tests for the LLM side of the hardening issue: what a user runs is exact and does what it says."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nashalign.algorithms import get_algorithm
from nashalign.llm.trainer import NashTrainer, TrainerConfig

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "llm"  # the app's config dir (conf/README.md)
from tiny_settings import TINY as _BASE  # noqa: E402

TINY = {**_BASE, "epochs": 2, "num_threads": 1}


def compose_llm(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="llm", overrides=list(overrides))


def trainable(policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------ stale warm-up gradient, resume per model source
def test_tiny_policy_leaves_no_gradient_and_the_trainer_drops_planted_ones(synthetic_task, load_policy, tmp_path):
    from nashalign.llm.synthetic import build_tiny_policy

    built = build_tiny_policy(synthetic_task, seed=0, warmup_steps=3)
    assert sum(p.grad is not None for p in built.model.parameters()) == 0
    policy = load_policy()
    for p in policy.model.parameters():
        p.grad = torch.ones_like(p)  # whatever built the model left a gradient behind
    NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), synthetic_task.oracle(), synthetic_task.prompts,
                TrainerConfig(**TINY, output_dir=str(tmp_path)))
    assert all(p.grad is None for p in policy.model.parameters())


@pytest.mark.parametrize("source", ["built_in_process", "from_pretrained", "lora"])
def test_resume_is_bit_identical_for_every_model_source(source, synthetic_task, load_policy, tmp_path):
    from nashalign.llm.synthetic import build_tiny_policy

    def make_policy():
        if source == "built_in_process":  # the app's default model=tiny: no from_pretrained round trip
            return build_tiny_policy(synthetic_task, seed=0, warmup_steps=10)
        return load_policy(lora={"r": 4} if source == "lora" else None)

    alg = get_algorithm("egpo", eta=0.5, tau=0.1)
    lora = {"r": 4} if source == "lora" else None

    def trainer(out, **kw):
        cfg = TrainerConfig(**{**TINY, "iterations": 4, "save_every": 1, "lora": lora, "output_dir": str(out), **kw})
        return NashTrainer(make_policy(), alg, synthetic_task.oracle(), synthetic_task.prompts, cfg)

    full = trainer(tmp_path / "full")
    full.train()
    trainer(tmp_path / "cut").train(stop_after=2)
    resumed = trainer(tmp_path / "cut", resume=True)
    assert resumed.iteration == 2
    resumed.train()
    a, b = trainable(full.policy), trainable(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a), "resume is not bit-identical"
    assert full.history[-1]["loss"] == resumed.history[-1]["loss"]


# ------------------------------------------------------------------ LoRA with the default model
@pytest.mark.parametrize("override", ["trainer.lora={r:4}", "trainer=lora"])
def test_lora_with_the_default_tiny_model(override, synthetic_task):
    from nashalign.llm.app import build_policy

    cfg = compose_llm([override, "model.warmup_steps=3", "trainer.cpu=true"])
    policy = build_policy(cfg.model, synthetic_task, synthetic_task.prompts)
    assert policy.is_peft and policy._adapter_reference
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_lora_error_names_what_to_do(load_policy, synthetic_task, tmp_path):
    with pytest.raises(ValueError, match=r"no LoRA adapter.*lora=config.lora.*lora: \$\{trainer.lora\}") as err:
        NashTrainer(load_policy(), get_algorithm("nash_md", eta=0.5, tau=0.1), synthetic_task.oracle(),
                    synthetic_task.prompts, TrainerConfig(**TINY, lora={"r": 4}, output_dir=str(tmp_path)))
    assert "the llm app does this" not in str(err.value)


# ------------------------------------------------------------------ output_dir reuse
def test_output_dir_holding_a_run_is_refused_unless_resume_or_overwrite(load_policy, synthetic_task, tmp_path):
    alg = get_algorithm("nash_md", eta=0.5, tau=0.1)

    def run(**kw):
        cfg = TrainerConfig(**{**TINY, "iterations": 2, "output_dir": str(tmp_path), **kw})
        return NashTrainer(load_policy(), alg, synthetic_task.oracle(), synthetic_task.prompts, cfg)

    run().train()
    with pytest.raises(ValueError, match="already holds a run.*trainer.resume=true.*overwrite_output_dir=true"):
        run()
    run(overwrite_output_dir=True).train()
    rows = [json.loads(line)["iteration"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [0, 1, 2]  # not 0, 1, 2, 0, 1, 2
    resumed = run(iterations=3, resume=True)
    assert resumed.iteration == 2  # the replacing run's checkpoint, not a stale one


# ------------------------------------------------------------------ prompt files and conversations
def test_prompt_files_load_by_extension(tmp_path):
    import datasets

    from nashalign.llm.data import load_prompts

    ds = datasets.Dataset.from_dict({"prompt": ["a?", "b?"], "other": [1, 2]})
    ds.to_parquet(str(tmp_path / "p.parquet"))
    assert load_prompts(str(tmp_path / "p.parquet"), field="prompt") == ["a?", "b?"]
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    assert load_prompts(str(arrow), field="prompt") == ["a?", "b?"]
    with pytest.raises(KeyError, match="field 'question' not found"):
        load_prompts(str(tmp_path / "p.parquet"), field="question")


def test_messages_records_keep_the_whole_conversation(tmp_path, load_policy):
    from nashalign.llm.data import ChatPrompt, load_prompts

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Pick a color:"},
            {"role": "assistant", "content": "red"}]
    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": chat}) + "\n")
    (prompt,) = load_prompts(str(tmp_path / "c.jsonl"))
    assert isinstance(prompt, ChatPrompt) and list(prompt.messages) == chat[:4]  # up to the last user turn
    policy = load_policy()
    policy.tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    policy.use_chat_template = True
    (text,) = policy.format_prompts([prompt])
    assert text == "<system>Be brief.<user>Hi<assistant>Hello.<user>Pick a color:<assistant>"


def test_model_hf_without_a_name_says_what_to_set(synthetic_task):
    from nashalign.llm.app import build_policy
    from nashalign.llm.policy import CausalLMPolicy

    cfg = compose_llm(["model=hf", "data=jsonl", "data.source=unused.jsonl"])
    with pytest.raises(ValueError, match=r"set model.name_or_path="):
        build_policy(cfg.model, None, ["x"])
    with pytest.raises(ValueError, match=r"model.name_or_path="):
        CausalLMPolicy.from_pretrained(None)


# ------------------------------------------------------------------ LoRA export
def test_lora_final_merged_export_loads_alone_and_adapter_base_path_is_absolute(
    load_policy, synthetic_task, tiny_lm_dir, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(Path(tiny_lm_dir).parent)
    policy = load_policy(os.path.basename(tiny_lm_dir), lora={"r": 4})  # a RELATIVE base path
    cfg = TrainerConfig(**{**TINY, "iterations": 1, "lora": {"r": 4}, "merge_lora": True, "save_final_model": True,
                           "output_dir": str(tmp_path / "run")})
    NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), synthetic_task.oracle(), synthetic_task.prompts,
                cfg).train()
    final = tmp_path / "run" / "final"
    assert not (final / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(final))
    samples = policy.encode(synthetic_task.prompts, ["rock", "red", "one"])
    with torch.no_grad():
        expected = policy.sequence_logprobs(samples)
        got = policy.sequence_logprobs(samples, model=merged)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    policy.save_pretrained(tmp_path / "adapter")  # the default export: the adapter alone
    base = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert os.path.isabs(base) and os.path.samefile(base, tiny_lm_dir)
    assert policy.model.peft_config["default"].base_model_name_or_path == os.path.basename(tiny_lm_dir)  # unchanged


# ------------------------------------------------------------------ no deprecation / shared-tensor warnings
def test_generation_and_checkpoints_emit_no_cache_or_shared_tensor_warnings(load_policy, synthetic_task, tmp_path,
                                                                            caplog):
    policy = load_policy()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        policy.generate(synthetic_task.prompts, 2, max_new_tokens=4, seed=0, mixture=0.5)
        trainer = NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), synthetic_task.oracle(),
                              synthetic_task.prompts, TrainerConfig(**{**TINY, "iterations": 1},
                                                                    output_dir=str(tmp_path)))
        trainer.train()
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if "past_key_values" in t or "Removed shared tensor" in t], texts


# ------------------------------------------------------------------ a configured oracle is used or refused
FAST = ["model.warmup_steps=3", "trainer.iterations=1", "trainer.prompts_per_iteration=2",
        "trainer.max_new_tokens=4", "trainer.epochs=1", "trainer.progress=false", "trainer.save_final_model=false"]

ORACLE_MODULE = '''
import torch
CALLS = []
def longest(prompts, first, second):
    with open(__file__ + ".calls", "a") as fh:
        fh.write(f"{len(first)}\\n")
    return torch.tensor([0.5 + 0.1 * ((len(a) > len(b)) - (len(a) < len(b))) for a, b in zip(first, second)])
'''


def test_a_configured_oracle_is_used_or_the_run_names_the_switch(tmp_path):
    (tmp_path / "my_oracle.py").write_text(ORACLE_MODULE)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}")
    base = [sys.executable, str(ROOT / "llm" / "train.py"), *FAST, "oracle=function", "oracle.oracle.fn=my_oracle.longest"]
    refused = subprocess.run([*base, f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode != 0
    assert "benchmark.use_task_oracle=false" in refused.stderr + refused.stdout
    used = subprocess.run([*base, "benchmark.use_task_oracle=false", f"hydra.run.dir={tmp_path / 'b'}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert used.returncode == 0, used.stderr[-3000:]
    calls = (tmp_path / "my_oracle.py.calls").read_text().split()
    assert calls and sum(int(c) for c in calls) >= json.loads((tmp_path / "b" / "summary.json").read_text())["queries"]
