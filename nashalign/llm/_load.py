"""Loading and saving :class:`~nashalign.llm.policy.CausalLMPolicy` models: dtype names, the process's
device, LoRA wrapping, ``from_pretrained`` (with ``device_map`` / ``attn_implementation`` passthrough) and
``save_pretrained`` (absolute base paths for adapters, an optional merged export)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["resolve_dtype", "default_device", "process_state", "load_policy", "save_policy", "wrap_lora"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def process_state(cpu: bool = False) -> Any:
    """Accelerate's distributed state of this process (``accelerate.PartialState``), created on first call.

    ``cpu=True`` or a machine without CUDA asks for the CPU backend (gloo): without it, a CPU-only machine
    launched with a GPU config (``conf/accelerate/ddp.yaml``) would silently run each process alone.
    """
    from accelerate import PartialState

    return PartialState(cpu=bool(cpu) or not torch.cuda.is_available())


def default_device() -> torch.device:
    """This process's device from Accelerate's distributed state (``cuda:<local rank>`` under
    ``accelerate launch``, the CPU without a GPU); creating it first is what lets every rank place its
    models on its own GPU instead of ``cuda:0``."""
    return process_state().device


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """``"float32"|"bfloat16"|"float16"`` (or aliases), a ``torch.dtype``, ``"auto"`` or ``None`` -> a dtype."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))}, 'auto', a torch.dtype or None; got {dtype!r}.")




def load_policy(
    cls: Any,
    name_or_path: str,
    *,
    tokenizer: Any | str | None = None,
    dtype: str | torch.dtype | None = None,
    device: torch.device | str | None = None,
    lora: Mapping[str, Any] | None = None,
    reference: str | None = None,
    use_chat_template: bool | None = None,
    max_prompt_length: int = 512,
    trust_remote_code: bool = False,
    **model_kwargs: Any,
) -> Any:
    """Load a causal LM (and its tokenizer) from the Hub or a local directory.

    Args:
        name_or_path: model id or path (anything ``AutoModelForCausalLM.from_pretrained`` takes).
            A directory holding a saved PEFT adapter (``adapter_config.json``) is loaded as base
            model + adapter, with the adapter trainable.
        tokenizer: a tokenizer object, or a name/path to load it from (default: ``name_or_path``).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"``, a ``torch.dtype`` or ``None``
            (float32; ``torch_dtype=`` is accepted as an alias).
        device: e.g. ``"cuda:1"``, ``"cpu"``; ``None`` = this process's Accelerate device
            (:func:`default_device`).  Ignored when ``device_map`` places the model.
        lora: ``peft.LoraConfig`` kwargs (see the class docstring).
        reference: path of a separate frozen reference model (same tokenizer).
        use_chat_template: see the class docstring.
        max_prompt_length: see the class docstring.
        trust_remote_code: passed to the ``from_pretrained`` calls.
        **model_kwargs: further ``from_pretrained`` kwargs, e.g. ``attn_implementation="sdpa"`` (or
            ``"flash_attention_2"`` when installed) and ``device_map``; ``None`` values are dropped.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name_or_path, (str, os.PathLike)) or str(name_or_path) in ("", "???"):
        raise ValueError(
            f"name_or_path must be a Hub id or a local model directory, got {name_or_path!r}; in the llm app "
            "set model.name_or_path=<hub id or path>."
        )
    name_or_path = os.fspath(name_or_path)
    if model_kwargs.get("torch_dtype") is not None:
        if dtype is not None:
            raise ValueError("give dtype or torch_dtype, not both (torch_dtype is the older name).")
        dtype = model_kwargs["torch_dtype"]
    model_kwargs = {k: v for k, v in model_kwargs.items() if v is not None and k != "torch_dtype"}
    torch_dtype = resolve_dtype(dtype)
    placed = "device_map" in model_kwargs
    if device is None and not placed:
        device = default_device()
    kw: dict[str, Any] = dict(trust_remote_code=trust_remote_code, **model_kwargs)
    if torch_dtype is not None:
        kw["dtype"] = torch_dtype
    tok_source = tokenizer if isinstance(tokenizer, str) or tokenizer is None else None
    is_adapter = os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "adapter_config.json"))
    if is_adapter:
        from peft import AutoPeftModelForCausalLM

        if lora is not None:
            raise ValueError(
                f"{name_or_path!r} is a saved PEFT adapter; lora=... would add a second one. Drop lora=..."
            )
        model = AutoPeftModelForCausalLM.from_pretrained(name_or_path, is_trainable=True, **kw)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **kw)
        except OSError as err:
            raise OSError(
                f"Could not load a causal LM from {name_or_path!r}: {err}. Pass a local directory saved with "
                f"save_pretrained or a Hub id reachable from this machine."
            ) from err
    if tokenizer is None or isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(
            tok_source or name_or_path, trust_remote_code=trust_remote_code, padding_side="left"
        )
    ref_model = AutoModelForCausalLM.from_pretrained(reference, **kw) if reference is not None else None
    return cls(
        model,
        tokenizer,
        lora=lora,
        reference_model=ref_model,
        use_chat_template=use_chat_template,
        max_prompt_length=max_prompt_length,
        device=None if placed else device,
    )



def save_policy(self: Any, path: str | os.PathLike[str], *, merge_lora: bool = False) -> None:
    """Save the model and the tokenizer to ``path``.

    Under PEFT the adapter alone is saved, with its base model recorded as an ABSOLUTE path when the
    base is a local directory (so the adapter loads from any working directory).  ``merge_lora=True``
    saves instead the base with the adapter merged in (a plain model that
    ``AutoModelForCausalLM.from_pretrained(path)`` loads alone); the live policy is not changed.
    """
    path = os.fspath(path)
    if merge_lora and self.is_peft:
        merged = copy.deepcopy(self.model).merge_and_unload()
        merged.save_pretrained(path)
    elif merge_lora:
        raise ValueError("merge_lora=True needs a LoRA policy; this one has no adapter (save it as is).")
    elif self.is_peft:
        configs = getattr(self.model, "peft_config", {})
        given = {name: c.base_model_name_or_path for name, c in configs.items()}
        try:
            for c in configs.values():
                base = c.base_model_name_or_path
                if base and os.path.isdir(base):
                    c.base_model_name_or_path = os.path.abspath(base)
            self.model.save_pretrained(path)
        finally:
            for name, base in given.items():
                configs[name].base_model_name_or_path = base
    else:
        self.model.save_pretrained(path)
    self.tokenizer.save_pretrained(path)


def wrap_lora(model: Any, lora: Mapping[str, Any]) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover
        raise ImportError("lora=... needs peft: pip install 'nashalign[llm]'.") from err
    kw = dict(lora)
    kw.setdefault("task_type", "CAUSAL_LM")
    try:
        cfg = LoraConfig(**kw)
    except TypeError as err:
        raise TypeError(f"Invalid LoRA settings {dict(lora)}: {err}. Use peft.LoraConfig keyword names.") from err
    return get_peft_model(model, cfg)
