"""Weight export of the vLLM backend: the parameters ``pi_theta`` computes, as a vLLM engine loads them.

:func:`export_weights` gives every parameter of the plain causal LM under its HF name (a PEFT/LoRA model merged
on the fly, ``W + (alpha / r) B A`` per adapted layer); :func:`serialize_weights` / :func:`deserialize_weights`
carry them to a server as one safetensors blob; :func:`engine_config_dir` writes the config an engine with dummy
weights is built from.  The public names are re-exported by :mod:`nashalign.llm.vllm_backend`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["export_weights", "engine_config_dir", "serialize_weights", "deserialize_weights"]


def export_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every parameter of the plain causal LM that ``model`` computes, HF names.

    A PEFT/LoRA model is merged on the fly (``W + delta`` per adapted layer, the adapter's own
    ``get_delta_weight``; the model itself is not modified); a disabled adapter exports the base weights.
    Tied parameters appear under each name (vLLM's in-place reload expects ``lm_head.weight`` too).  Tensors
    are detached views, not copies.
    """
    from nashalign.llm.policy import _is_peft

    if not _is_peft(model):
        return [(n, p.detach()) for n, p in model.named_parameters(remove_duplicate=False)]
    deltas = _lora_deltas(model)
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if ".lora_" in name or ".original_module." in name:
            continue
        t = p.detach()
        if name in deltas:
            t = t + deltas[name].to(t.dtype)
        clean = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        out.append((clean.replace(".modules_to_save.default.", "."), t))
    return out


def _lora_deltas(model: Any) -> dict[str, torch.Tensor]:
    """``{name of the base weight: sum of active adapters' delta}`` for every unmerged LoRA layer."""
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for mname, mod in model.named_modules():
            if not isinstance(mod, LoraLayer) or mod.merged or mod.disable_adapters:
                continue
            active = [a for a in mod.active_adapters if a in mod.lora_A or a in getattr(mod, "lora_embedding_A", {})]
            if any(getattr(mod, "use_dora", {}).get(a, False) for a in active):
                raise ValueError(
                    "vLLM weight sync merges LoRA adapters as W + delta; DoRA (use_dora=True) is not supported. "
                    "Use plain LoRA or trainer.generation=hf."
                )
            if active:
                deltas[f"{mname}.base_layer.weight"] = sum(mod.get_delta_weight(a) for a in active)
    return deltas


def _base_config(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


def engine_config_dir(model: Any, root: str | None = None) -> tuple[str, str]:
    """Write the model's ``config.json`` (+ ``generation_config.json``) for an engine with dummy weights.

    Returns ``(directory, key)``: the key is the config's JSON, identical for models of the same shape.
    """
    cfg = _base_config(model)
    key = cfg.to_json_string(use_diff=False)
    path = tempfile.mkdtemp(prefix="nashalign-vllm-", dir=root)
    cfg.save_pretrained(path)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(path)
    return path, key


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")


def serialize_weights(named: Sequence[tuple[str, torch.Tensor]]) -> bytes:
    """One safetensors blob of CPU tensors (what the server's ``/weights`` route takes)."""
    from safetensors.torch import save

    seen: set[int] = set()
    out = {}
    for n, t in named:  # tied weights share storage, which safetensors refuses: copy the repeats
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[n] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return save(out)


def deserialize_weights(blob: bytes) -> list[tuple[str, torch.Tensor]]:
    from safetensors.torch import load

    return list(load(blob).items())
