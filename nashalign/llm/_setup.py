"""What :class:`~nashalign.llm.trainer.NashTrainer` settles before its loop: precision (fp32 master weights),
the frozen reference (compute dtype, sharding), gradient checkpointing, optimizer, and the reduction of
per-process metrics into global figures."""

from __future__ import annotations

import logging
from typing import Any

import torch

from nashalign.llm.config import TrainerConfig

__all__ = [
    "allow_precision_change",
    "compute_dtype",
    "prepare_precision",
    "prepare_reference",
    "enable_gradient_checkpointing",
    "build_optimizer",
    "reduce_metrics",
    "peak_memory_mb",
]

log = logging.getLogger(__name__)

_HALF = (torch.bfloat16, torch.float16)
#: Per-process counts and throughputs: summed over processes.
SUM_KEYS = ("queries_iter", "eval_queries_iter", "rows", "samples_per_s", "tokens_per_s")
#: Wall-clock and memory: the slowest / largest process.
MAX_KEYS = ("time_s", "train_s", "generation_s", "peak_memory_mb")


def allow_precision_change(cfg: TrainerConfig) -> None:
    """Let a second trainer in one (non-distributed) Python process use another ``mixed_precision``.

    Accelerate keeps one process-wide ``AcceleratorState`` and refuses a different precision once it exists; a
    single process may safely start over (its distributed state, the ``PartialState``, is kept).
    """
    from accelerate.state import AcceleratorState, PartialState

    if not AcceleratorState._shared_state or PartialState().num_processes > 1:
        return
    if AcceleratorState().mixed_precision != cfg.mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def compute_dtype(cfg: TrainerConfig) -> torch.dtype | None:
    """The autocast dtype of ``trainer.mixed_precision`` (None for ``"no"``)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)


def prepare_precision(policy: Any, cfg: TrainerConfig) -> int:
    """Keep fp32 master weights: trainable half-precision parameters are upcast in place under mixed precision.

    With ``mixed_precision="bf16"`` the forward runs in bf16 (autocast) while the optimizer updates float32
    parameters, so steps below bf16 resolution (e.g. lr 5e-7 on weights of order 1e-2) are not lost.  Returns
    the number of parameters upcast.

    Raises:
        ValueError: trainable bf16/fp16 weights with ``mixed_precision="no"`` (no master copy would exist).
    """
    half = [p for p in policy.model.parameters() if p.requires_grad and p.dtype in _HALF]
    if not half:
        return 0
    if cfg.mixed_precision == "no":
        raise ValueError(
            f"{len(half)} trainable parameters are {half[0].dtype} and trainer.mixed_precision='no': the optimizer "
            "would update half-precision weights directly and lose every update below their resolution (at "
            "lr 5e-7 most of them). Set trainer.mixed_precision=bf16 (the trainer then keeps float32 master "
            "weights and runs bf16 autocast), load the model in float32 (model.dtype=null), or use LoRA."
        )
    with torch.no_grad():
        for p in half:
            p.data = p.data.float()
    log.info("upcast %d trainable parameters to float32 master weights (%s autocast).", len(half), cfg.mixed_precision)
    return sum(p.numel() for p in half)


def _sharded(acc: Any) -> bool:
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return True
    if acc.distributed_type == DistributedType.DEEPSPEED:
        plugin = getattr(acc.state, "deepspeed_plugin", None)
        return int(getattr(plugin, "zero_stage", 0) or 0) == 3
    return False


def prepare_reference(policy: Any, acc: Any, cfg: TrainerConfig) -> None:
    """Freeze ``mu`` and cast a separate reference model to the compute dtype on this process's device.

    Under LoRA the reference is the adapter-off base (no copy; sharded with the policy).  Otherwise it is a
    frozen model that is only read: stored in the autocast dtype (bf16 under ``mixed_precision="bf16"``),
    it costs half the memory of an fp32 copy and runs under the same autocast as the policy.

    Raises:
        ValueError: FSDP or DeepSpeed ZeRO-3 with a full reference copy (it would be an unsharded model on
            every rank): use LoRA so the reference is the sharded base.
    """
    policy.freeze_reference()
    if getattr(policy, "_adapter_reference", False):
        return
    if _sharded(acc):
        raise ValueError(
            "FSDP / DeepSpeed ZeRO-3 shard the policy, but the reference mu of full fine-tuning is a separate "
            "frozen copy that would sit unsharded on every rank. Use LoRA (trainer=lora: the reference is the "
            "adapter-off base, sharded with the policy), or DDP / ZeRO-2 for full fine-tuning."
        )
    ref = policy._ref_model
    if ref is None:
        return
    dtype = compute_dtype(cfg)
    ref.to(device=acc.device, **({"dtype": dtype} if dtype is not None else {}))


def enable_gradient_checkpointing(policy: Any) -> None:
    """Non-reentrant activation checkpointing (works with frozen bases and LoRA)."""
    model = policy.model
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise ValueError(f"trainer.gradient_checkpointing: {type(model).__name__} does not support it.")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(policy, "is_peft", False) and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if hasattr(model, "config"):
        model.config.use_cache = False


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)


def _kind(key: str) -> str:
    leaf = key.rsplit("/", 1)[-1]
    return "sum" if leaf in SUM_KEYS else "max" if leaf in MAX_KEYS else "mean"


def reduce_metrics(acc: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Global figures from per-process ones with ONE collective: counts and throughputs summed, times and
    memory maxed, everything else (losses, win rates, signal means) averaged.  A no-op on one process."""
    if acc.num_processes == 1:
        return metrics
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iteration"]
    vals = torch.tensor([float(metrics[k]) for k in keys], device=acc.device, dtype=torch.float64)
    table = acc.gather(vals[None]).reshape(acc.num_processes, len(keys))  # (P, K)
    out = dict(metrics)
    for k, col in zip(keys, table.T.tolist()):
        kind = _kind(k)
        out[k] = sum(col) if kind == "sum" else max(col) if kind == "max" else sum(col) / len(col)
        if isinstance(metrics[k], int) and kind == "sum":
            out[k] = int(round(out[k]))
    return out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except (ImportError, OSError):  # pragma: no cover
        return float("nan")


def check_inputs(cfg: TrainerConfig, policy: Any, algorithm: Any, oracle: Any, prompts: Any) -> None:
    """Clear errors for what :class:`~nashalign.llm.trainer.NashTrainer` is given."""
    from nashalign.algorithms.base import Algorithm

    if not isinstance(algorithm, Algorithm):
        raise TypeError(
            f"algorithm must be a nashalign Algorithm (e.g. get_algorithm('nash_md', eta=0.5, tau=0.1)), "
            f"got {type(algorithm).__name__}."
        )
    if not callable(oracle):
        raise TypeError(f"oracle must be callable oracle(prompts, first, second), got {type(oracle).__name__}.")
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got one string; wrap it in a list.")
    if not list(prompts) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings (see nashalign.llm.data.load_prompts).")
    peft = getattr(policy, "is_peft", False)
    if cfg.lora is not None and not peft:
        raise ValueError(
            "trainer.lora is set but the policy given to NashTrainer has no LoRA adapter: build it with the "
            "same settings, e.g. CausalLMPolicy.from_pretrained(..., lora=config.lora) or "
            "build_tiny_policy(task, lora=config.lora); a model config group must pass `lora: ${trainer.lora}`."
        )
    if cfg.merge_lora and not peft:
        raise ValueError("trainer.merge_lora=true merges a LoRA adapter, but the policy has none; drop it.")


def check_estimator(cfg: TrainerConfig, alg: Any, estimator: str) -> None:
    if cfg.pairs == "best_worst" and estimator != "winrate":
        raise ValueError("trainer.pairs='best_worst' needs the 'winrate' estimator (it ranks k responses).")
    from nashalign.estimators import check_form_estimator

    check_form_estimator(alg, estimator)  # the sampled mode's rule: pg needs pi_t's responses, no logistic + pair


def available_trackers(cfg: TrainerConfig) -> list[str] | None:
    """``trainer.log_with`` restricted to the installed trackers (a warning for the others)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    ok = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    names = [n for n in cfg.log_with or [] if ok[n]()]
    for n in set(cfg.log_with or []) - set(names):
        log.warning("trainer.log_with: %s is not installed; skipping it (metrics.jsonl is still written).", n)
    return names or None


def gathered(acc: Any, model: Any) -> Any:
    """Full parameters for generation: FSDP gathers its shards (``summon_full_params``); else a no-op."""
    from contextlib import nullcontext

    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(model, writeback=False)
    return nullcontext()


def dropout_free(model: Any) -> bool:
    """True when training-mode forwards equal eval-mode ones: no dropout module or config rate above 0."""
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return False
    cfg = getattr(model, "config", None)
    rates = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
    return not any(
        ("dropout" in k or "pdrop" in k) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        for k, v in rates.items()
    )


def prompt_cycle(prompts: list[Any], size: int, slot: int, seed: int) -> list[Any]:
    """Batch number ``slot`` of ``size`` prompts from a seeded cycle of shuffled passes over ``prompts``."""
    n, out, perms = len(prompts), [], {}
    for j in range(slot * size, (slot + 1) * size):
        rnd = j // n
        if rnd not in perms:
            perms[rnd] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + rnd)).tolist()
        out.append(prompts[perms[rnd][j % n]])
    return out


def tracker_config(cfg: TrainerConfig, alg: Any) -> dict[str, Any]:
    """Flat hyperparameters for Accelerate's trackers."""
    out = {f"trainer/{k}": v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
    out.update({f"algorithm/{k}": v for k, v in alg.hyperparameters().items() if v is not None})
    out["algorithm/name"] = alg.name
    return out
