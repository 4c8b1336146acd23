"""Win rate of a trained checkpoint against the reference or another checkpoint, with a confidence interval.

    python llm/evaluate.py eval.checkpoint=outputs/llm/<run>/final                 # vs the model group's policy (mu)
    python llm/evaluate.py eval.checkpoint=<run A>/final eval.against=<run B>/final
    python llm/evaluate.py model=hf model.name_or_path=<base> eval.checkpoint=<run>/final \
        oracle=reward_model oracle.oracle.name_or_path=<reward model> data=jsonl data.source=heldout.jsonl

Uses the same config groups as llm/train.py (``conf/llm/llm.yaml``): ``model`` builds the reference policy,
``oracle`` judges (the synthetic task's own oracle with ``data=synthetic``), ``data`` gives the prompts.
Writes ``win_rate.json`` (the win rate and the length-controlled win rate ``lc_win_rate``, with intervals) into the
Hydra output directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger("nashalign.llm.evaluate")


@hydra.main(version_base="1.3", config_path="../conf/llm", config_name="llm")
def main(cfg: DictConfig) -> dict:
    from nashalign.llm.app import build_policy, load_data, select_oracle
    from nashalign.llm.evaluate import compare
    from nashalign.llm.policy import CausalLMPolicy

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    ev = cfg.eval
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    task, prompts = load_data(cfg.data)
    if ev.num_prompts is not None:
        if int(ev.num_prompts) < 1:
            raise ValueError(f"eval.num_prompts must be >= 1 or null (all prompts), got {ev.num_prompts}.")
        prompts = prompts[: int(ev.num_prompts)]
    oracle = select_oracle(cfg, task)

    checkpoint = str(ev.checkpoint)
    if not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"eval.checkpoint={checkpoint!r} does not exist; pass the final/ directory a training run wrote "
            "(outputs/llm/<run>/final) or any save_pretrained directory."
        )
    device = "cpu" if cfg.trainer.cpu else None
    policy_a = CausalLMPolicy.from_pretrained(checkpoint, device=device, use_chat_template=_chat(cfg))
    if str(ev.against) == "reference":
        policy_b = build_policy(cfg.model, task, prompts)  # the policy training started from: mu
        label_b = "reference"
    else:
        policy_b = CausalLMPolicy.from_pretrained(str(ev.against), device=device, use_chat_template=_chat(cfg))
        label_b = str(ev.against)
    comparison = compare(
        policy_a,
        policy_b,
        prompts,
        oracle,
        k=int(ev.samples_per_prompt),
        max_new_tokens=int(ev.max_new_tokens),
        temperature=float(ev.temperature),
        seed=int(ev.seed),
        confidence=float(ev.confidence),
        missing_eos_penalty=ev.get("missing_eos_penalty", None),
    )
    result, lc = comparison.win_rate, comparison.length_controlled
    print(f"win rate of {checkpoint} vs {label_b}: {result}")
    print(f"length-controlled: {lc}")
    record = {
        "checkpoint": checkpoint,
        "against": label_b,
        **comparison.as_dict(),
        "per_prompt": list(result.per_prompt),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "win_rate.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _chat(cfg: DictConfig) -> bool | None:
    value = cfg.model.get("use_chat_template", None)
    return False if "task" in cfg.model.keys() else value


if __name__ == "__main__":
    main()
