"""``CausalLMPolicy``: a Hugging Face causal LM as a policy ``pi_theta(y | x)`` over response strings.

One object owns the model, its tokenizer and the reference policy ``mu``:

* :meth:`CausalLMPolicy.generate` samples ``k`` responses per prompt (:class:`~nashalign.llm._decode.HFSampler`:
  KV-cached decoding, optionally from the token-level geometric mixture ``pi^{1-w} mu^w``);
* :meth:`CausalLMPolicy.sequence_logprobs` returns ``log pi(y | x) = sum_k log pi(y_k | x, y_<k)`` over
  the response tokens only, in float32 whatever the model dtype (optionally length-normalised);
* :meth:`CausalLMPolicy.reference` yields ``mu``: the base model with the LoRA adapter disabled (free), a
  separately loaded frozen model, or a frozen copy of the initial model (``P`` extra parameters, cast to
  the compute dtype by the trainer);
* :meth:`snapshot` / :meth:`load_snapshot` / :meth:`using` / :meth:`ema_update`: parameter copies
  (:mod:`nashalign.llm.opponents` holds the trainer's, swapped in place).

Costs (``N`` rows, ``Lp``/``Lr`` prompt/response lengths, ``V`` vocabulary): generation is one prefill over
``(N, Lp)`` plus ``Lr`` one-token forwards (twice with a mixture); ``sequence_logprobs`` is one forward over
``(N, Lp + Lr)`` keeping float32 logits only for the ``Lr + 1`` predicting positions.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from nashalign.llm import _tokens
from nashalign.llm._decode import HFSampler, Samples, mixture_logprobs, positions, process_logprobs
from nashalign.llm._load import default_device, load_policy, resolve_dtype, save_policy, wrap_lora
from nashalign.llm.opponents import OpponentBank, copy_into, swap_into, trainable_named

__all__ = ["CausalLMPolicy", "Samples", "HFSampler", "mixture_logprobs", "process_logprobs", "resolve_dtype", "default_device"]

log = logging.getLogger(__name__)

def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is in the llm extra
        return False
    return isinstance(model, PeftModel)


# ----------------------------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------------------------


class CausalLMPolicy:
    """A causal LM ``pi_theta(y | x)`` with its tokenizer and reference ``mu``.

    Args:
        model: a ``transformers`` causal LM (``AutoModelForCausalLM``), optionally a ``peft.PeftModel``.
        tokenizer: its tokenizer.  Prompts are left-padded and left-truncated; a missing pad token is
            set to the EOS token.
        lora: ``peft.LoraConfig`` keyword arguments; the model is wrapped with ``get_peft_model`` and
            the reference becomes the base model with the adapter disabled.  ``task_type`` defaults to
            ``"CAUSAL_LM"``.
        reference_model: a separate frozen reference model (already loaded).  Default: the adapter-off
            base model under LoRA/PEFT, otherwise a frozen deep copy of the model taken on first need
            (first call of :meth:`reference`, :meth:`parameters_to_train`, :meth:`snapshot`, ...).  Call
            :meth:`freeze_reference` (or :meth:`parameters_to_train`) before any optimizer step, so the
            copy holds the INITIAL weights; a copy requested after the weights changed raises.
        use_chat_template: ``True``/``False``, or ``None`` = use it when the tokenizer has one.
        max_prompt_length: prompts longer than this (in tokens, after formatting) keep their LAST
            ``max_prompt_length`` tokens.
        device: where to put the model (and reference); ``None`` leaves the model where it is.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        lora: Mapping[str, Any] | None = None,
        reference_model: Any | None = None,
        use_chat_template: bool | None = None,
        max_prompt_length: int = 512,
        device: torch.device | str | None = None,
    ) -> None:
        if tokenizer is None:
            raise ValueError("CausalLMPolicy needs a tokenizer; pass tokenizer=... or use from_pretrained(path).")
        if device is not None:
            model = model.to(device)
        if lora is not None:
            if _is_peft(model):
                raise ValueError("lora=... was given but the model is already a PeftModel; pass one or the other.")
            model = wrap_lora(model, lora)
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first.")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
        if use_chat_template is None:
            use_chat_template = getattr(tokenizer, "chat_template", None) is not None
        elif use_chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("use_chat_template=True but the tokenizer has no chat_template; set one or pass False.")
        self.use_chat_template = bool(use_chat_template)
        if max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be >= 1, got {max_prompt_length}.")
        self.max_prompt_length = int(max_prompt_length)
        self.is_peft = _is_peft(model)
        # Where mu comes from: a separate model given/loaded (wins), the adapter-off base, or a frozen copy.
        self._adapter_reference = self.is_peft and reference_model is None
        self._ref_model = reference_model
        if reference_model is not None:
            reference_model.eval().requires_grad_(False)
            if device is not None:
                reference_model.to(device)
        self._ref_fingerprint = None if (self.is_peft or reference_model is not None) else self._fingerprint()
        self._logits_to_keep_ok: bool | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> CausalLMPolicy:
        """Load a causal LM and its tokenizer (Hub id or local directory): see :func:`nashalign.llm._load.load_policy`
        for the arguments (``tokenizer``, ``dtype``, ``device``, ``lora``, ``reference``, ``use_chat_template``,
        ``max_prompt_length``, ``trust_remote_code``, ``attn_implementation``, ``device_map``, ...)."""
        return load_policy(cls, name_or_path, **kwargs)

    def save_pretrained(self, path: str | os.PathLike[str], *, merge_lora: bool = False) -> None:
        """Save model and tokenizer (under LoRA the adapter, with an absolute base path; ``merge_lora=True``
        saves a merged plain model instead): :func:`nashalign.llm._load.save_policy`."""
        save_policy(self, path, merge_lora=merge_lora)

    # ------------------------------------------------------------------ basic properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_token_ids(self) -> list[int]:
        """EOS ids: the tokenizer's plus any in the model's generation config."""
        ids: list[int] = []
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        gen_cfg = getattr(self.model, "generation_config", None)
        extra = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if extra is not None:
            for e in [extra] if isinstance(extra, int) else list(extra):
                if int(e) not in ids:
                    ids.append(int(e))
        if not ids:
            raise ValueError("No EOS token id: set tokenizer.eos_token (generation needs it to stop).")
        return ids

    # ------------------------------------------------------------------ reference policy mu
    def _fingerprint(self) -> tuple[float, ...]:
        params = [p for _, p in self.model.named_parameters()]
        if not params:
            return ()
        picks = {0, len(params) // 2, len(params) - 1}
        with torch.no_grad():
            return tuple(float(params[i].detach().double().sum()) for i in sorted(picks))

    def freeze_reference(self) -> None:
        """Make the frozen reference copy now (no-op under LoRA/PEFT or with a separate reference model).

        Called automatically by :meth:`parameters_to_train`, :meth:`snapshot` and on first use of the
        reference.  Raises if the weights changed since construction (the copy would not be ``mu``).
        """
        if self.is_peft or self._ref_model is not None:
            return
        if self._ref_fingerprint is not None and self._fingerprint() != self._ref_fingerprint:
            raise RuntimeError(
                "The policy's weights changed before the frozen reference copy was made, so it would not be the "
                "initial model. Call policy.freeze_reference() or policy.parameters_to_train() before training, "
                "or pass reference=<path> / use LoRA."
            )
        ref = copy.deepcopy(self.model)
        ref.eval().requires_grad_(False)
        self._ref_model = ref
        log.info("CausalLMPolicy: made a frozen copy of the initial model as the reference mu.")

    @contextmanager
    def reference(self) -> Iterator[Any]:
        """Context manager yielding the reference model ``mu`` (eval mode, frozen).

        Under LoRA/PEFT it is the same module with the adapter disabled inside the ``with`` block (do
        not run the policy there); otherwise a separate frozen model.
        """
        if self._adapter_reference:
            with self.model.disable_adapter():
                yield self.model
            return
        if self._ref_model is None:
            self.freeze_reference()
        ref = self._ref_model
        if next(ref.parameters()).device != self.device:
            ref.to(self.device)
        yield ref

    def parameters_to_train(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (the adapter under LoRA).  Also freezes the reference copy."""
        self.freeze_reference()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("The model has no trainable parameters (all requires_grad=False).")
        return params

    def _trainable_named(self) -> list[tuple[str, nn.Parameter]]:
        return trainable_named(self.model)

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Detached copies of the trainable parameters ``{name: tensor}`` (adapter only under LoRA).

        ``device=None`` keeps them on the policy device; ``device="cpu"`` offloads them.  The trainer
        keeps its copies in an :class:`~nashalign.llm.opponents.OpponentBank` instead.
        """
        self.freeze_reference()
        with torch.no_grad():
            return {n: p.detach().to(device or p.device, copy=True) for n, p in self._trainable_named()}

    def load_snapshot(self, snapshot: Mapping[str, Tensor]) -> None:
        """Copy ``snapshot`` into the trainable parameters, in place (optimizers stay valid)."""
        self.freeze_reference()
        copy_into(self.model, snapshot)

    @contextmanager
    def using(self, snapshot: dict[str, Tensor]) -> Iterator[CausalLMPolicy]:
        """Temporarily hold ``snapshot`` (swapped in place, no third copy); restored on exit."""
        self.freeze_reference()
        swap_into(self.model, snapshot)
        try:
            yield self
        finally:
            swap_into(self.model, snapshot)

    def ema_update(self, ema_snapshot: dict[str, Tensor], beta: float) -> dict[str, Tensor]:
        """In place: ``ema <- (1 - beta) * ema + beta * theta`` (Nash-EMA, SPEC §3.3); returns it."""
        bank = OpponentBank(self.model)
        bank.slots["ema"] = ema_snapshot
        bank.ema_update("ema", beta)
        return ema_snapshot

    # ------------------------------------------------------------------ tokenisation
    def format_prompts(self, prompts: Sequence[str]) -> list[str]:
        """Prompts as the model sees them (the chat template when used; whole conversations templated whole)."""
        return _tokens.format_prompts(self, prompts)

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(ids, mask)``, each ``(B, Lp)`` long on the policy device, left-padded and left-truncated."""
        return _tokens.encode_prompts(self, prompts)

    def encode(self, prompts: Sequence[str], responses: Sequence[str], **kwargs: Any) -> Samples:
        """Given (prompt, response) pairs as :class:`Samples` (``add_eos``, ``prompt_index``): see
        :func:`nashalign.llm._tokens.encode`."""
        return _tokens.encode(self, prompts, responses, **kwargs)

    # ------------------------------------------------------------------ generation
    def _resolve_model(self, model: Any) -> tuple[Any, Any]:
        """``(module, context factory)``: ``None`` -> the policy; ``"reference"`` -> mu; a module -> itself.

        The factory returns a fresh context manager to run the module in (the adapter toggle under
        PEFT), once per forward.
        """
        if model is None or model is self.model:
            return self.model, nullcontext
        if isinstance(model, str):
            if model != "reference":
                raise ValueError(f"model must be None, 'reference' or a module, got {model!r}.")
            if self._adapter_reference:
                return self.model, self.model.disable_adapter
            if self._ref_model is None:
                self.freeze_reference()
            return self._ref_model, nullcontext
        if isinstance(model, CausalLMPolicy):
            return model.model, nullcontext
        return model, nullcontext

    @torch.no_grad()
    def generate(self, prompts: Sequence[Any], k: int = 1, *, seed: int | None = None, **settings: Any) -> Samples:
        """Sample ``k`` responses per prompt (prompt-major rows) with :class:`~nashalign.llm._decode.HFSampler`.

        ``settings``: ``max_new_tokens`` (64), ``temperature``, ``top_p``, ``top_k``, ``do_sample``, ``mixture``
        (weight ``w`` on ``mu`` of the token-level geometric mixture), ``model_override`` (``"reference"``, a
        module or another ``CausalLMPolicy`` sharing the tokenizer), ``generator``, ``batch_size``.  Deterministic
        given ``generator`` or ``seed``; runs under ``torch.no_grad`` in eval mode (restored afterwards).
        """
        prompts = _tokens.check_strings(prompts, "prompts")
        if not prompts:
            raise ValueError("generate: prompts is empty.")
        if k < 1:
            raise ValueError(f"generate: k must be >= 1, got {k}.")
        if settings.get("max_new_tokens", 64) < 1:
            raise ValueError(f"generate: max_new_tokens must be >= 1, got {settings['max_new_tokens']}.")
        if not 0.0 <= settings.get("mixture", 0.0) <= 1.0:
            raise ValueError(f"generate: mixture must be in [0, 1], got {settings['mixture']}.")
        if settings.get("do_sample", True):  # validate once
            process_logprobs(torch.zeros(1, 2), settings.get("temperature", 1.0), settings.get("top_k", 0),
                             settings.get("top_p", 1.0))
        if settings.get("generator") is None and seed is not None:
            settings["generator"] = torch.Generator(device=self.device).manual_seed(int(seed))
        settings.setdefault("max_new_tokens", 64)
        return HFSampler()(self, prompts, k, **settings)

    # ------------------------------------------------------------------ scoring
    def sequence_logprobs(
        self,
        samples: Samples,
        *,
        model: Any = None,
        normalize: bool = False,
        grad: bool = False,
        batch_size: int | None = None,
    ) -> Tensor:
        """``log pi(y | x) = sum_k log pi(y_k | x, y_<k)`` over response tokens, ``(N,)`` float32.

        Prompt and padding positions are masked out (the sum runs over ``response_mask == 1``, EOS
        included).  Logits are cast to float32 before the log-softmax, whatever the model dtype.

        Args:
            samples: from :meth:`generate` or :meth:`encode`.
            model: ``None`` = the policy; ``"reference"`` = ``mu`` (adapter disabled under LoRA, or
                the frozen reference; always without grad); or any causal-LM module (e.g. an
                Accelerate-wrapped copy of the policy).
            normalize: divide by the number of response tokens (EGPO's ``normalize_logprobs``).
            grad: keep the autograd graph (training).  Without grad the model runs in eval mode
                (restored afterwards); with grad its current mode is kept.
            batch_size: rows per forward (``None`` = all at once).
        """
        is_ref = isinstance(model, str) and model == "reference"
        if is_ref and grad:
            raise ValueError(
                "sequence_logprobs(model='reference', grad=True): the reference is frozen; use grad=False."
            )
        module, ctx = self._resolve_model(model)
        n = len(samples)
        if n == 0:
            return torch.zeros(0, dtype=torch.float32, device=self.device)
        step = batch_size or n
        was_training = module.training
        if not grad:
            module.eval()
        try:
            with ctx(), nullcontext() if grad else torch.no_grad():
                chunks = [self._chunk_logprobs(module, samples, slice(s, s + step)) for s in range(0, n, step)]
        finally:
            module.train(was_training)
        logp = torch.cat(chunks)
        if normalize:
            logp = logp / samples.response_mask.sum(-1).clamp(min=1).to(logp)
        return logp

    def _chunk_logprobs(self, module: Any, s: Samples, rows: slice) -> Tensor:
        dev = next(module.parameters()).device
        p_ids, p_mask = s.prompt_ids[rows].to(dev), s.prompt_mask[rows].to(dev)
        r_ids, r_mask = s.response_ids[rows].to(dev), s.response_mask[rows].to(dev)
        lr = r_ids.shape[1]
        ids = torch.cat([p_ids, r_ids], dim=1)  # (B, Lp + Lr)
        mask = torch.cat([p_mask, r_mask], dim=1)
        pos = positions(mask)
        kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
        logits = None
        if self._logits_to_keep_ok is not False:
            try:
                logits = module(**kwargs, logits_to_keep=lr + 1).logits
                self._logits_to_keep_ok = True
            except TypeError:
                self._logits_to_keep_ok = False
        if logits is None:
            logits = module(**kwargs).logits
        logits = logits[:, -(lr + 1) : -1, :].float()  # (B, Lr, V): position j predicts response token j
        tok_logit = logits.gather(-1, r_ids.unsqueeze(-1)).squeeze(-1)  # (B, Lr)
        tok_logp = tok_logit - torch.logsumexp(logits, dim=-1)  # (B, Lr) float32
        return (tok_logp * r_mask.to(tok_logp.dtype)).sum(-1)  # (B,)

    def __repr__(self) -> str:
        name = getattr(getattr(self.model, "config", None), "_name_or_path", type(self.model).__name__)
        ref = (
            "adapter-off base"
            if self._adapter_reference
            else ("separate model" if self._ref_model is not None else "copy")
        )
        return (
            f"CausalLMPolicy({name!r}, device={self.device}, reference={ref}, chat_template={self.use_chat_template})"
        )
