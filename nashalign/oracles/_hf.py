"""Shared Hugging Face plumbing for the model-backed oracles (imported lazily: only when such an oracle is built).

Everything here works on right-padded batches: the real tokens of a sequence sit at positions
``0..len-1`` whatever the batch, so a batched forward pass gives the same numbers as one sequence at a
time (up to float round-off) for any transformer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'.")
    return value


def load_tokenizer(name_or_path: str, tokenizer: Any = None, **kwargs: Any) -> Any:
    """The tokenizer for ``name_or_path`` (or ``tokenizer`` itself, or a path given as ``tokenizer``)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        return ensure_pad_token(tokenizer)
    from transformers import AutoTokenizer

    return ensure_pad_token(AutoTokenizer.from_pretrained(tokenizer or name_or_path, **kwargs))


def ensure_pad_token(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a padding token (its EOS token) when it has none; batching needs one."""
    if getattr(tokenizer, "pad_token", None) is None:
        eos = getattr(tokenizer, "eos_token", None)
        if eos is None:
            raise ValueError(
                f"Tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token; set "
                "tokenizer.pad_token before building the oracle."
            )
        tokenizer.pad_token = eos
    return tokenizer


def prepare_model(model: Any, tokenizer: Any, device: str | torch.device | None) -> tuple[Any, torch.device]:
    """Put ``model`` in eval mode on ``device`` and make its config know the pad token id."""
    dev = resolve_device(device) if device is not None else _model_device(model)
    model = model.to(dev)
    model.eval()
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
        cfg.pad_token_id = tokenizer.pad_token_id
    return model, dev


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def from_pretrained_kwargs(dtype: str | torch.dtype | None, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kw = dict(model_kwargs or {})
    dt = resolve_dtype(dtype)
    if dt is not None:
        kw["dtype"] = dt
    return kw


def load_pretrained(
    auto_class: str,
    name_or_path: str,
    tokenizer: Any,
    dtype: str | torch.dtype | None,
    model_kwargs: dict[str, Any] | None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``name_or_path``: ``transformers.<auto_class>.from_pretrained`` with ``dtype``
    and ``model_kwargs``, and :func:`load_tokenizer` (``tokenizer``: an object, a path, or ``None``)."""
    import transformers

    tok = load_tokenizer(name_or_path, tokenizer)
    kwargs = from_pretrained_kwargs(dtype, model_kwargs)
    model = getattr(transformers, auto_class).from_pretrained(name_or_path, **kwargs)
    return model, tok


def check_template(template: str, fields: Sequence[str] = ("{prompt}", "{first}", "{second}")) -> None:
    """Raise ``ValueError`` unless the ``str.format`` pattern ``template`` contains every one of ``fields``."""
    for field in fields:
        if field not in template:
            raise ValueError(f"template must contain {field}; got {template!r}.")


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    device: torch.device,
    max_length: int | None,
    add_special_tokens: bool = True,
) -> dict[str, torch.Tensor]:
    """Tokenise a right-padded batch (truncated to ``max_length`` tokens unless ``None``) and move it to ``device``."""
    kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt", "padding_side": "right"}
    if not add_special_tokens:
        kwargs["add_special_tokens"] = False
    if max_length is not None:
        kwargs.update(truncation=True, max_length=int(max_length))
    enc = tokenizer(list(texts), **kwargs)
    return {k: v.to(device) for k, v in enc.items()}


def encoded_batches(
    tokenizer: Any, texts: Sequence[str], device: torch.device, max_length: int | None, batch_size: int | None
) -> Iterator[dict[str, torch.Tensor]]:
    """:func:`encode` of consecutive pieces of at most ``batch_size`` texts, in order."""
    for start, stop in chunks(len(texts), batch_size):
        yield encode(tokenizer, texts[start:stop], device, max_length)


def chunks(n: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` windows of at most ``batch_size`` items covering ``range(n)``."""
    step = n if not batch_size else int(batch_size)
    for start in range(0, n, max(step, 1)):
        yield start, min(start + step, n)
