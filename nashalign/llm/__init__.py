"""The language-model lift of nashalign: transformers policies, the Nash trainer, evaluation, data, and
the known-equilibrium synthetic LM benchmark.

Importing ``nashalign`` never imports this package; importing ``nashalign.llm`` is light too: names are
re-exported lazily, so ``transformers``/``peft``/``datasets`` load only when a name that needs them is used.

    >>> from nashalign.llm import CausalLMPolicy          # doctest: +SKIP
    >>> policy = CausalLMPolicy.from_pretrained("path/or/hub-id", lora={"r": 16})   # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY: dict[str, str] = {
    # policy
    "CausalLMPolicy": "nashalign.llm.policy",
    "Samples": "nashalign.llm._decode",
    "mixture_logprobs": "nashalign.llm.policy",
    "process_logprobs": "nashalign.llm.policy",
    # synthetic benchmark
    "SyntheticTask": "nashalign.llm.synthetic",
    "Evaluation": "nashalign.llm.synthetic",
    "build_task": "nashalign.llm.synthetic",
    "build_tiny_policy": "nashalign.llm.synthetic",
    "response_distribution": "nashalign.llm.synthetic",
    "extended_game": "nashalign.llm.synthetic",
    "evaluate_exact": "nashalign.llm.synthetic",
    "ExactEvaluator": "nashalign.llm.synthetic",
    # trainer
    "NashTrainer": "nashalign.llm.trainer",
    "TrainerConfig": "nashalign.llm.trainer",
    "BenchmarkSummary": "nashalign.llm.app",
    "OpponentBank": "nashalign.llm.opponents",
    "HFSampler": "nashalign.llm._decode",
    "VLLMSampler": "nashalign.llm.vllm_backend",
    "VLLMOptions": "nashalign.llm.generation",
    "make_sampler": "nashalign.llm.generation",
    "ChatPrompt": "nashalign.llm.data",
    "build_scratch_policy": "nashalign.llm.tiny",
    # evaluation and data
    "WinRate": "nashalign.llm.evaluate",
    "win_rate": "nashalign.llm.evaluate",
    "load_prompts": "nashalign.llm.data",
    # tiny local builders
    "build_tokenizer": "nashalign.llm.tiny",
    "build_causal_lm": "nashalign.llm.tiny",
}
_SUBMODULES = {"policy", "synthetic", "evaluate", "data", "tiny", "trainer", "config", "checkpoint", "opponents", "runs",
               "generation"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"nashalign.llm.{name}")
    else:
        raise AttributeError(f"module 'nashalign.llm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = sorted(_LAZY)
