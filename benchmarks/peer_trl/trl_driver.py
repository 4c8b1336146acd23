"""Run TRL itself (in its own virtual environment) for ``benchmarks/bench_llm_peers.py``.

This file is executed by the peer venv's Python, never imported by nashalign; it imports nothing from
nashalign.  Everything it needs comes from plain files the benchmark wrote:

* ``model_dir``: a causal LM + tokenizer saved with ``save_pretrained`` (loaded with ``from_pretrained``);
* ``spec.json``: the run (trainer, batch, lengths, optimizer, steps) and the reward.

Rewards (the same scores nashalign's ``RewardModelOracle`` gets, so both sides use Bradley-Terry
``sigmoid(r1 - r2)``):

* ``"token"``: ``r(x, y) = sum_t w[y_t]`` over the completion tokens, with ``w`` a fixed vector saved by the
  benchmark (``reward_w.pt``).  TRL 1.13's Nash-MD reads a reward *model* through
  ``trl.experimental.utils.get_reward`` (``getattr(model, model.base_model_prefix)`` then ``model.score``), so
  the reward is a duck-typed ``nn.Module`` whose "backbone" returns the running sum of ``w`` over the
  sequence (pads count 0): the value at the last token is the prompt's constant plus ``r``.  TRL 1.16's
  OnlineDPO takes a plain callable.
* ``"class"`` (the known-equilibrium benchmark): ``r`` = the class score of the decoded completion, or
  ``invalid_score`` when it is none of the valid responses.

Timing: wall time of every ``training_step`` (and of its parts, by wrapping the trainer instance's own methods
with timers: nothing of TRL is copied or changed), optimizer steps counted by a callback; the result is the
best of ``windows`` windows of ``steps`` steps after ``warmup`` steps.  Peak memory: ``ru_maxrss`` (CPU) or
``torch.cuda.max_memory_allocated`` (GPU).

Compatibility patch (``spec["patch_mixture_cache"]``, applied at run time to the installed copy, default on):
with transformers 5 (measured on 5.23), ``generate`` builds a ``DynamicCache`` and hands it to the model even
though TRL 1.13's ``GeometricMixtureWrapper.prepare_inputs_for_generation`` asks for ``use_cache=False``; the
wrapper then runs the policy AND the reference on that one shared cache (10 cached positions after a
5-token prompt), so the "mixture" samples come from neither model (with the reference = a copy of the
policy, the policy gives one/two/three = 268/144/88 of 500 and the wrapper 'oneoneoneone', 'onetwooneone',
...).  The patch makes that method return what transformers 4 returned for ``use_cache=False`` (the whole
sequence, position ids from the attention mask, no cache), which restores what TRL intends: no KV cache,
every decoding step re-runs both models on the full sequence (checked: with the reference = a copy of the
policy, the patched wrapper draws exactly the policy's samples under the same seed, left-padded batches
included).  trl 1.0.0's wrapper also lacks the
``get_experts_implementation``/``set_experts_implementation`` pass-throughs that transformers 5's
``generate`` calls (added in later TRL); the patch adds them (delegating to the policy).  OnlineDPO (trl 1.16)
needs no patch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
import types
from pathlib import Path

import torch
from torch import nn


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TokenRewardModel(nn.Module):
    """Duck-typed reward model for ``trl.experimental.utils.get_reward``: r = sum of ``w`` over tokens."""

    base_model_prefix = "backbone"

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        from transformers import PretrainedConfig

        self.config = PretrainedConfig(name_or_path="token-reward")
        self.register_buffer("w", w.float())
        outer = self

        class Backbone(nn.Module):
            def forward(self, input_ids, attention_mask=None, **kwargs):
                vals = outer.w[input_ids] * (attention_mask if attention_mask is not None else 1)
                return types.SimpleNamespace(last_hidden_state=vals.cumsum(-1).unsqueeze(-1))

        self.backbone = Backbone()
        self.score = nn.Identity()


class ClassRewardModel(nn.Module):
    """Duck-typed reward model: the class score of the decoded completion (``invalid`` otherwise)."""

    base_model_prefix = "backbone"

    def __init__(self, tokenizer, prompts: list[str], scores: dict[str, dict[str, float]], invalid: float) -> None:
        super().__init__()
        from transformers import PretrainedConfig

        self.config = PretrainedConfig(name_or_path="class-reward")
        self.register_buffer("dummy", torch.zeros(1))
        tok, plain = (
            tokenizer,
            {p: tokenizer.decode(tokenizer(p)["input_ids"], skip_special_tokens=True) for p in prompts},
        )

        class Backbone(nn.Module):
            def forward(self, input_ids, attention_mask=None, **kwargs):
                out = torch.full(input_ids.shape, float(invalid), device=input_ids.device)
                for i, row in enumerate(input_ids.tolist()):
                    text = tok.decode(row, skip_special_tokens=True)
                    for p, pt in plain.items():
                        if text.startswith(pt):
                            out[i] = scores[p].get(text[len(pt) :].strip(), invalid)
                            break
                return types.SimpleNamespace(last_hidden_state=out.unsqueeze(-1))

        self.backbone = Backbone()
        self.score = nn.Identity()


class MatrixJudge:
    """Duck-typed pairwise judge (TRL <= 1.0's ``BasePairwiseJudge`` protocol): ``P(first > second)`` from a
    class-level preference matrix per prompt; a completion outside the valid set loses to every valid one."""

    def __init__(self, classes: dict[str, list[str]], matrices: dict[str, list[list[float]]]) -> None:
        self.classes = {p: {c: i for i, c in enumerate(cs)} for p, cs in classes.items()}
        self.matrices = matrices

    def judge(self, prompts, completions, shuffle_order=True, return_scores=False):
        out = []
        for p, (a, b) in zip(prompts, completions):
            ia, ib = self.classes[p].get(a.strip()), self.classes[p].get(b.strip())
            if ia is None or ib is None:
                out.append(0.5 if ia is None and ib is None else (0.0 if ia is None else 1.0))
            else:
                out.append(float(self.matrices[p][ia][ib]))
        return out


def class_distribution(model, eval_items: list[dict]) -> list[list[float]]:
    """Teacher-forced ``pi(y | x)`` of each valid response (token ids given by the benchmark)."""
    out = []
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for item in eval_items:
            row = []
            for resp in item["responses"]:
                ids = torch.tensor([item["prompt"] + resp], device=dev)
                logits = model(ids).logits[0, len(item["prompt"]) - 1 : -1].float()
                lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(resp, device=dev)[:, None]).sum()
                row.append(math.exp(float(lp)))
            out.append(row)
    if was_training:
        model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("out")
    args = ap.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    torch.set_num_threads(int(spec.get("threads", 1)))
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    cuda = spec["device"] == "cuda"
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    prompts = spec["prompts"]
    n_rows = spec["batch"] * (spec["warmup"] + spec["steps"] * spec["windows"]) + spec["batch"]
    ds = datasets.Dataset.from_dict({"prompt": [prompts[i % len(prompts)] for i in range(n_rows)]})
    total_steps = spec["warmup"] + spec["steps"] * spec["windows"]

    kwargs = dict(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1,
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        max_steps=total_steps,
        max_new_tokens=spec["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=spec["beta"],
        gradient_checkpointing=False,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec.get("seed", 0),
        bf16=bool(cuda and spec.get("bf16")),
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )
    if spec.get("missing_eos_penalty") is not None:
        kwargs["missing_eos_penalty"] = spec["missing_eos_penalty"]

    reward = spec["reward"]
    if reward["kind"] == "token":
        w = torch.load(reward["w_path"])
    if spec["trainer"] == "nash_md":
        from trl.experimental.nash_md import NashMDConfig, NashMDTrainer
        from trl.experimental.nash_md import nash_md_trainer as nash_md_module

        if spec.get("patch_mixture_cache", True):
            wrapper = nash_md_module.GeometricMixtureWrapper

            def prepare_without_cache(self, input_ids, *a, **k):
                # What transformers 4 returned for use_cache=False: the whole sequence, positions from the mask
                # (transformers 5 slices input_ids to the new token and passes a cache, which the policy and the
                # reference then share).
                mask = k.get("attention_mask")
                inputs = {"input_ids": input_ids, "attention_mask": mask, "use_cache": False}
                if mask is not None:
                    inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
                return inputs

            wrapper.prepare_inputs_for_generation = prepare_without_cache
            if not hasattr(wrapper, "get_experts_implementation"):  # trl 1.0.0: transformers 5 generate calls it
                wrapper.get_experts_implementation = lambda self: self.model.get_experts_implementation()
                wrapper.set_experts_implementation = lambda self, impl: self.model.set_experts_implementation(impl)

        cfg = NashMDConfig(mixture_coef=spec["mixture_coef"], **kwargs)
        if reward["kind"] == "judge":  # TRL <= 1.0 only (judges were removed in 1.1)
            judge = MatrixJudge(reward["classes"], reward["matrices"])
            trainer = NashMDTrainer(model=model, judge=judge, args=cfg, train_dataset=ds, processing_class=tok)
        else:
            if reward["kind"] == "token":
                rm = TokenRewardModel(w)
            else:
                rm = ClassRewardModel(tok, prompts, reward["scores"], reward["invalid"])
            trainer = NashMDTrainer(model=model, reward_funcs=rm, args=cfg, train_dataset=ds, processing_class=tok)
        parts = ["_generate_completions", "_compute_rewards", "_compute_judge", "_compute_logprobs", "_compute_losses"]
    elif spec["trainer"] == "online_dpo":
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        cfg = OnlineDPOConfig(loss_type=spec.get("loss_type", "ipo"), **kwargs)
        pad = tok.pad_token_id

        def token_reward(prompts, completions, completion_ids, **kw):
            return [float(sum(float(w[t]) for t in ids if t != pad)) for ids in completion_ids]

        trainer = OnlineDPOTrainer(
            model=model, reward_funcs=token_reward, args=cfg, train_dataset=ds, processing_class=tok
        )
        parts = ["_generate", "_forward", "_calculate_rewards_from_functions"]
    else:
        raise SystemExit(f"unknown trainer {spec['trainer']!r}")

    # Timers around the instance's own methods (TRL's code runs unchanged).
    part_s = {p: 0.0 for p in parts + ["backward+optimizer(rest)"]}

    def timed(name, fn):
        def wrapper(*a, **k):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if cuda:
                    torch.cuda.synchronize()
                part_s[name] += time.perf_counter() - t0

        return wrapper

    parts = [p for p in parts if hasattr(trainer, p)]
    part_s = {p: 0.0 for p in parts + ["backward+optimizer(rest)"]}
    for p in parts:
        setattr(trainer, p, timed(p, getattr(trainer, p)))

    step_times: list[float] = []
    part_rows: list[dict] = []
    eval_rows: list[dict] = []
    eval_every = int(spec.get("eval_every", 0))
    state = {"t0": 0.0}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            for p in part_s:
                part_s[p] = 0.0
            state["t0"] = time.perf_counter()

        def on_step_end(self, args, st, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - state["t0"]
            step_times.append(dt)
            row = dict(part_s)
            row["backward+optimizer(rest)"] = dt - sum(v for k, v in part_s.items() if k in parts)
            part_rows.append(row)
            if eval_every and (st.global_step % eval_every == 0):
                eval_rows.append({"step": st.global_step, "dist": class_distribution(trainer.model, spec["eval"])})

    if eval_every:
        eval_rows.append({"step": 0, "dist": class_distribution(trainer.model, spec["eval"])})
    trainer.add_callback(Clock())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_mb()
    t_train = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t_train

    W, S = spec["warmup"], spec["steps"]
    windows = [sum(step_times[W + i * S : W + (i + 1) * S]) for i in range(spec["windows"])]
    best = min(range(len(windows)), key=lambda i: windows[i]) if windows else 0
    best_parts = {}
    if windows:
        rows = part_rows[W + best * S : W + (best + 1) * S]
        best_parts = {k: sum(r[k] for r in rows) / S for k in rows[0]}
    completions_per_step = 2 * spec["batch"]  # Nash-MD: policy + mixture; OnlineDPO: two policy samples
    out = {
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "accelerate": __import__("accelerate").__version__,
        "device": str(trainer.accelerator.device),
        "threads": torch.get_num_threads(),
        "step_times": step_times,
        "window_s": windows,
        "best_window_s": windows[best] if windows else None,
        "steps_per_s": S / windows[best] if windows else None,
        "samples_per_s": completions_per_step * S / windows[best] if windows else None,
        "prompts_per_s": spec["batch"] * S / windows[best] if windows else None,
        "completions_per_step": completions_per_step,
        "seconds_per_step_by_part": best_parts,
        "train_s": t_train,
        "rss_before_train_mb": rss_before,
        "peak_rss_mb": rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "eval": eval_rows,
        "patch_mixture_cache": bool(spec.get("patch_mixture_cache", True)) if spec["trainer"] == "nash_md" else None,
        "pid": os.getpid(),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
