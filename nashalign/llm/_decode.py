"""Sampling from a causal LM: :class:`Samples`, next-token distributions and the KV-cached decoding loop.

Everything the trainer draws goes through one object, :class:`HFSampler` (``sampler(policy, prompts, k,
...) -> Samples``), so another generation backend can be swapped in by passing ``NashTrainer(...,
sampler=my_sampler)`` with the same call signature (or ``trainer.generation=vllm``:
:class:`nashalign.llm.vllm_backend.VLLMSampler`; the protocol is in :mod:`nashalign.llm.generation`).

Decoding runs one prefill forward over ``(N, Lp)`` and then one-token forwards with the model's KV
cache; with ``mixture = w > 0`` the reference ``mu`` keeps its own cache and the next-token law is the
token-level geometric mixture ``pi^{1-w} mu^w`` (:func:`mixture_logprobs`).  The loop checks whether
every row has stopped only every ``stop_check_every`` tokens (one host-device sync per check).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Samples", "HFSampler", "mixture_logprobs", "process_logprobs", "forward_cached"]

#: Tokens decoded between two checks of "every row has stopped" (each check is one host-device sync).
STOP_CHECK_EVERY = 8


@dataclass
class Samples:
    """A batch of ``N`` (prompt, response) pairs as token ids, with the decoded response texts.

    Rows are prompt-major: with ``k`` samples per prompt, prompt ``i``'s samples are rows
    ``i*k .. i*k + k - 1``.  Indexing (``samples[j]``) and ``len`` act on the response texts, so a
    ``Samples`` can be passed where a list of responses is expected (e.g. to an oracle).

    Attributes:
        prompt_index: ``(N,)`` long, which input prompt each row answers.
        prompt_ids: ``(N, Lp)`` long, formatted prompt tokens, LEFT-padded with the pad id.
        prompt_mask: ``(N, Lp)`` long, 1 on prompt tokens, 0 on padding.
        response_ids: ``(N, Lr)`` long, response tokens, RIGHT-padded with the pad id.
        response_mask: ``(N, Lr)`` long, 1 up to and including the first EOS (or on every generated
            token if the response hit ``max_new_tokens`` without EOS), 0 after.
        texts: ``N`` decoded responses (special tokens skipped).
        prompts: ``N`` raw prompt strings (before the chat template), one per row, what an oracle
            receives as the context.
        finished: ``(N,)`` bool, whether the response ended with EOS (``False``: truncated).
    """

    prompt_index: Tensor
    prompt_ids: Tensor
    prompt_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    texts: list[str]
    prompts: list[Any] = field(default_factory=list)
    finished: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.prompt_index.shape[0]
        for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"Samples.{name} has {getattr(self, name).shape[0]} rows, prompt_index has {n}.")
        if len(self.texts) != n:
            raise ValueError(f"Samples.texts has {len(self.texts)} entries, prompt_index has {n} rows.")
        if self.prompts and len(self.prompts) != n:
            raise ValueError(f"Samples.prompts has {len(self.prompts)} entries, expected one per row ({n}).")
        if self.finished is None:
            self.finished = torch.ones(n, dtype=torch.bool, device=self.prompt_index.device)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    @property
    def response_lengths(self) -> Tensor:
        """``(N,)`` long: number of response tokens counted by the mask (EOS included)."""
        return self.response_mask.sum(-1)

    @property
    def device(self) -> torch.device:
        return self.response_ids.device

    def select(self, index: Tensor | Sequence[int]) -> Samples:
        """Rows ``index`` (a 1-D long/bool tensor or a list of ints) as a new ``Samples``.

        Give a CPU index (or a list) on hot paths: the row numbers for the texts are then read without a
        host-device sync; a device index costs one copy to the host.
        """
        host = torch.as_tensor(index)
        host = host.nonzero().squeeze(-1) if host.dtype == torch.bool else host.long()
        rows = host.tolist() if host.device.type == "cpu" else host.cpu().tolist()
        idx = host.to(self.prompt_index.device, non_blocking=True)
        return Samples(
            prompt_index=self.prompt_index[idx],
            prompt_ids=self.prompt_ids[idx],
            prompt_mask=self.prompt_mask[idx],
            response_ids=self.response_ids[idx],
            response_mask=self.response_mask[idx],
            texts=[self.texts[r] for r in rows],
            prompts=[self.prompts[r] for r in rows] if self.prompts else [],
            finished=self.finished[idx] if self.finished is not None else None,
        )

    def to(self, device: torch.device | str) -> Samples:
        """A copy with every tensor on ``device``."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, Tensor):
                kw[k] = v.to(device)
        return Samples(**kw)

    @staticmethod
    def concatenate(parts: Sequence[Samples], pad_id: int) -> Samples:
        """Stack batches row-wise, re-padding prompts on the left and responses on the right."""
        if not parts:
            raise ValueError("Samples.concatenate needs at least one batch.")
        if len(parts) == 1:
            return parts[0]
        lp = max(p.prompt_ids.shape[1] for p in parts)
        lr = max(p.response_ids.shape[1] for p in parts)

        def pad(x: Tensor, width: int, value: int, left: bool) -> Tensor:
            extra = width - x.shape[1]
            return F.pad(x, (extra, 0) if left else (0, extra), value=value) if extra else x

        return Samples(
            prompt_index=torch.cat([p.prompt_index for p in parts]),
            prompt_ids=torch.cat([pad(p.prompt_ids, lp, pad_id, True) for p in parts]),
            prompt_mask=torch.cat([pad(p.prompt_mask, lp, 0, True) for p in parts]),
            response_ids=torch.cat([pad(p.response_ids, lr, pad_id, False) for p in parts]),
            response_mask=torch.cat([pad(p.response_mask, lr, 0, False) for p in parts]),
            texts=[t for p in parts for t in p.texts],
            prompts=[t for p in parts for t in p.prompts] if all(p.prompts for p in parts) else [],
            finished=torch.cat([p.finished for p in parts]),  # type: ignore[misc]
        )


# ----------------------------------------------------------------------------------------------------------------
# Next-token distributions
# ----------------------------------------------------------------------------------------------------------------


def mixture_logprobs(policy_logits: Tensor, ref_logits: Tensor, w: float) -> Tensor:
    """Next-token log-probabilities of the token-level geometric mixture ``pi^{1-w} mu^w``.

    ``log m(v) = (1-w) log pi(v) + w log mu(v) - log sum_u pi(u)^{1-w} mu(u)^w``, computed in float32 as
    ``log_softmax((1-w) * log_softmax(a) + w * log_softmax(b))`` for logits ``a`` (policy) and ``b``
    (reference), each ``(..., V)``.  ``w = 0`` gives ``log_softmax(a)``, ``w = 1`` gives ``log_softmax(b)``.

    TRL's ``GeometricMixtureWrapper`` returns ``log_softmax(w * b + (1-w) * a)`` on the RAW logits: the
    per-row constants cancel in the final normalisation, so the two are the same distribution.  Neither
    is the SEQUENCE-level geometric mixture of the Nash-MD theory (SPEC §3.2 and §11 note 3).
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"mixture weight w must be in [0, 1], got {w}.")
    a = torch.log_softmax(policy_logits.float(), dim=-1)
    if w == 0.0:
        return a
    b = torch.log_softmax(ref_logits.float(), dim=-1)
    if w == 1.0:
        return b
    return torch.log_softmax((1.0 - w) * a + w * b, dim=-1)


def process_logprobs(logp: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering of next-token log-probs ``(B, V)``.

    Returns normalised float32 log-probs with filtered tokens at ``-inf``.  ``temperature`` divides
    the log-probs (``T < 1`` sharpens); ``top_k = 0`` and ``top_p = 1`` disable the filters.  Top-p
    keeps the smallest set of most likely tokens whose mass reaches ``top_p`` (always at least one).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use do_sample=False for greedy decoding), got {temperature}.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}.")
    x = logp.float()
    if temperature != 1.0:
        x = x / temperature
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]  # (B, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(x, dim=-1)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of strictly more likely tokens
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return torch.log_softmax(x, dim=-1)


def positions(mask: Tensor) -> Tensor:
    """Position ids from a (left-padded) attention mask: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def response_mask(resp: Tensor, eos_ids: Sequence[int]) -> Tensor:
    """1 up to and including the first EOS of each row (every position if none), 0 after.  ``(N, T)`` long."""
    is_eos = torch.isin(resp, torch.tensor(list(eos_ids), device=resp.device))
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after).long()


@functools.lru_cache(maxsize=64)
def _cache_argument(cls: type) -> tuple[str, bool]:
    """``(cache keyword, takes logits_to_keep)`` of a model class's forward: ``cache`` on transformers
    versions that renamed it, the older ``past_key_values`` otherwise."""
    params = inspect.signature(cls.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _innermost(model: Any) -> Any:
    """The transformers model under PEFT / DDP wrappers (whose forward signature names the cache)."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            break
    return model


def forward_cached(model: Any, ids: Tensor, mask: Tensor, pos: Tensor, cache: Any) -> tuple[Tensor, Any]:
    """One cached forward through the current cache API: float32 logits of the last position ``(B, V)``,
    and the updated cache (no deprecated ``past_key_values`` keyword where the model takes ``cache``)."""
    name, keep = _cache_argument(type(_innermost(model)))
    extra: dict[str, Any] = {name: cache, **({"logits_to_keep": 1} if keep else {})}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
    new_cache = getattr(out, "cache", None) if name == "cache" else None
    if new_cache is None:
        new_cache = out.past_key_values
    return out.logits[:, -1, :].float(), new_cache


def _draw(logp: Tensor, generator: torch.Generator | None) -> Tensor:
    probs = logp.exp()
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode(
    sampler: Any,
    sampler_ctx: Any,
    reference: Any,
    p_ids: Tensor,
    p_mask: Tensor,
    *,
    eos_ids: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    do_sample: bool = True,
    mixture: float = 0.0,
    generator: torch.Generator | None = None,
    stop_check_every: int = STOP_CHECK_EVERY,
) -> tuple[Tensor, Tensor]:
    """The decoding loop: ``(response ids (N, T), finished (N,) bool)``; ``T <= max_new_tokens``.

    ``sampler_ctx()`` is entered around each forward of ``sampler``; ``reference()`` (a context manager
    yielding ``mu``) is used only when ``mixture > 0``.  Rows that stopped emit the pad id.
    """
    n, dev = p_ids.shape[0], p_ids.device
    eos = torch.tensor(list(eos_ids), device=dev)
    use_ref = mixture > 0.0
    attn, pos = p_mask.clone(), positions(p_mask)
    with sampler_ctx():
        logits_s, cache_s = forward_cached(sampler, p_ids, attn, pos, None)
    logits_r = cache_r = None
    if use_ref:
        with reference() as ref:
            logits_r, cache_r = forward_cached(ref, p_ids, attn, pos, None)
    next_pos = pos[:, -1:] + 1  # (N, 1)
    finished = torch.zeros(n, dtype=torch.bool, device=dev)
    out: list[Tensor] = []
    for t in range(max_new_tokens):
        logp = mixture_logprobs(logits_s, logits_r, mixture) if use_ref else torch.log_softmax(logits_s, -1)
        tok = _draw(process_logprobs(logp, temperature, top_k, top_p), generator) if do_sample else logp.argmax(-1)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        out.append(tok)
        finished = finished | torch.isin(tok, eos)
        if t == max_new_tokens - 1 or ((t + 1) % stop_check_every == 0 and bool(finished.all())):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        with sampler_ctx():
            logits_s, cache_s = forward_cached(sampler, tok[:, None], attn, next_pos, cache_s)
        if use_ref:
            with reference() as ref:
                logits_r, cache_r = forward_cached(ref, tok[:, None], attn, next_pos, cache_r)
        next_pos = next_pos + 1
    resp = torch.stack(out, dim=1)
    # Trim trailing columns where every row had already stopped (one sync per batch, not per token).
    width = int(response_mask(resp, eos_ids).sum(-1).max())
    return resp[:, : max(width, 1)], finished


class HFSampler:
    """The transformers generation backend: ``sampler(policy, prompts, k, **settings) -> Samples``.

    Args of ``__call__``: ``policy`` (a :class:`~nashalign.llm.policy.CausalLMPolicy`), ``prompts``,
    ``k`` samples per prompt, and ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``do_sample``,
    ``mixture`` (weight ``w`` on ``mu``), ``model_override`` (``None``, ``"reference"`` or a module),
    ``generator``, ``batch_size`` (rows decoded at once), ``weights`` (the opponent kind whose parameters the
    model holds: a label, this loop samples the live model whatever it holds).  A replacement backend takes the
    same call and may add ``weights_changed()`` / ``release()`` (:mod:`nashalign.llm.generation`).
    """

    def __init__(self, stop_check_every: int = STOP_CHECK_EVERY) -> None:
        if int(stop_check_every) < 1:
            raise ValueError(f"stop_check_every must be >= 1, got {stop_check_every}.")
        self.stop_check_every = int(stop_check_every)

    @torch.no_grad()
    def __call__(
        self,
        policy: Any,
        prompts: Sequence[Any],
        k: int = 1,
        *,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = True,
        mixture: float = 0.0,
        model_override: Any = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        weights: str = "current",
    ) -> Samples:
        ids, mask = policy.encode_prompts(prompts)  # (B, Lp)
        rows = torch.arange(len(prompts)).repeat_interleave(k)  # (N,) prompt-major, on the host
        step = batch_size or len(rows)
        if step < 1:
            raise ValueError(f"generate: batch_size must be >= 1, got {batch_size}.")
        sampler, sampler_ctx = policy._resolve_model(model_override)
        modules = [sampler] + ([policy.model] if policy.is_peft or policy._ref_model is not None else [])
        was_training = [m.training for m in modules]
        for m in modules:
            m.eval()
        eos_ids, pad_id = policy.eos_token_ids, policy.pad_token_id
        try:
            parts = []
            for start in range(0, len(rows), step):
                r = rows[start : start + step]
                r_dev = r.to(ids.device)
                p_ids, p_mask = ids[r_dev], mask[r_dev]
                resp, fin = decode(
                    sampler, sampler_ctx, policy.reference, p_ids, p_mask, eos_ids=eos_ids, pad_id=pad_id,
                    max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                    do_sample=do_sample, mixture=mixture, generator=generator,
                    stop_check_every=self.stop_check_every,
                )
                r_mask = response_mask(resp, eos_ids)
                resp = resp.masked_fill(r_mask == 0, pad_id)
                parts.append(
                    Samples(
                        prompt_index=r_dev,
                        prompt_ids=p_ids,
                        prompt_mask=p_mask,
                        response_ids=resp,
                        response_mask=r_mask,
                        texts=policy.tokenizer.batch_decode(resp, skip_special_tokens=True),
                        prompts=[prompts[i] for i in r.tolist()],
                        finished=fin,
                    )
                )
        finally:
            for m, t in zip(modules, was_training):
                m.train(t)
        return Samples.concatenate(parts, pad_id)
