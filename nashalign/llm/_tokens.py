"""Tokenisation for :class:`~nashalign.llm.policy.CausalLMPolicy`: prompts through the chat template (whole
conversations included), left-padded prompt batches, and (prompt, response) pairs as :class:`Samples`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nashalign.llm._decode import Samples

__all__ = ["format_prompts", "encode_prompts", "encode", "check_strings"]


def check_strings(xs: Any, label: str) -> list[str]:
    if isinstance(xs, str):
        raise TypeError(f"{label} must be a list of strings, got a single string; wrap it: [{xs[:30]!r}].")
    xs = list(xs)
    bad = [type(x).__name__ for x in xs if not isinstance(x, str)]
    if bad:
        raise TypeError(f"{label} must be strings; got {bad[0]} entries.")
    return xs


def format_prompts(self: Any, prompts: Sequence[str]) -> list[str]:
    """Prompts as the model sees them: through the chat template (``add_generation_prompt=True``)
    when it is used, unchanged otherwise.  A prompt carrying a whole conversation (``.messages``, from
    a ``{"messages": [...]}`` record, :class:`~nashalign.llm.data.ChatPrompt`) is templated whole."""
    prompts = check_strings(prompts, "prompts")
    if not self.use_chat_template:
        return list(prompts)
    return [
        self.tokenizer.apply_chat_template(
            list(getattr(p, "messages", None) or [{"role": "user", "content": str(p)}]),
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]

def encode_prompts(self: Any, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """``(ids, mask)``, each ``(B, Lp)`` long on the policy device, left-padded and left-truncated."""
    texts = self.format_prompts(prompts)
    enc = self.tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=self.max_prompt_length,
        add_special_tokens=not self.use_chat_template,
    )
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if ids.shape[1] == 0 or bool((mask.sum(-1) == 0).any()):
        raise ValueError("A prompt tokenises to zero tokens; give non-empty prompts (or a tokenizer adding BOS).")
    # Re-pad on the left whatever the tokenizer's own padding side was.
    if self.tokenizer.padding_side != "left":  # pragma: no cover - set in __init__
        raise RuntimeError("tokenizer.padding_side must be 'left' for generation.")
    return ids.to(self.device), mask.to(self.device)

def encode(
    self: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    add_eos: bool = True,
    prompt_index: Tensor | Sequence[int] | None = None,
) -> Samples:
    """Tokenise given (prompt, response) pairs into :class:`Samples` (e.g. to score fixed responses).

    ``prompts`` has one entry per row, or one per distinct prompt with ``prompt_index`` mapping
    rows to them.  Responses are tokenised without special tokens and end with EOS when
    ``add_eos`` (the EOS counts in the mask, as in generated samples).
    """
    responses = check_strings(responses, "responses")
    prompts = check_strings(prompts, "prompts")
    if prompt_index is None:
        if len(prompts) != len(responses):
            raise ValueError(
                f"encode: {len(prompts)} prompts for {len(responses)} responses; give one prompt per response "
                f"or pass prompt_index."
            )
        pidx = torch.arange(len(responses))
    else:
        pidx = torch.as_tensor(prompt_index).long().cpu()
        if pidx.shape != (len(responses),) or (pidx.numel() and (pidx.min() < 0 or pidx.max() >= len(prompts))):
            raise ValueError("prompt_index must be (N,) ints in [0, len(prompts)), one per response.")
    p_ids, p_mask = self.encode_prompts(prompts)
    p_ids, p_mask = p_ids[pidx.to(p_ids.device)], p_mask[pidx.to(p_ids.device)]
    eos = self.eos_token_ids[0]
    toks = [
        self.tokenizer(r, add_special_tokens=False)["input_ids"] + ([eos] if add_eos else []) for r in responses
    ]
    if any(len(t) == 0 for t in toks):
        raise ValueError("An empty response with add_eos=False has no tokens to score.")
    lr = max(len(t) for t in toks)
    r_ids = torch.full((len(toks), lr), self.pad_token_id, dtype=torch.long)
    r_mask = torch.zeros((len(toks), lr), dtype=torch.long)
    for i, t in enumerate(toks):
        r_ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        r_mask[i, : len(t)] = 1
    dev = self.device
    return Samples(
        prompt_index=pidx.to(dev),
        prompt_ids=p_ids,
        prompt_mask=p_mask,
        response_ids=r_ids.to(dev),
        response_mask=r_mask.to(dev),
        texts=list(responses),
        prompts=[prompts[i] for i in pidx.tolist()],
        finished=torch.full((len(toks),), add_eos, dtype=torch.bool, device=dev),
    )
