"""``CausalLMPolicy``: a Hugging Face causal LM as a policy ``pi_theta(y | x)`` over response strings.

One object owns the model, its tokenizer and the reference policy ``mu``, and exposes the few
operations every game-theoretic trainer needs:

* :meth:`CausalLMPolicy.generate` samples ``k`` responses per prompt from ``pi_theta``, from another
  model (``model_override``), or from the token-level geometric mixture ``pi^{1-w} mu^w`` (Nash-MD's
  opponent; :func:`mixture_logprobs`), with a KV cache for every model involved;
* :meth:`CausalLMPolicy.sequence_logprobs` returns ``log pi(y | x) = sum_k log pi(y_k | x, y_<k)`` over
  the response tokens only, in float32 whatever the model dtype (optionally length-normalised, EGPO's
  ``normalize_logprobs``);
* :meth:`CausalLMPolicy.reference` yields ``mu``: the base model with the LoRA adapter disabled, a
  separately loaded frozen model, or a frozen copy of the initial model;
* :meth:`snapshot` / :meth:`load_snapshot` / :meth:`using` / :meth:`ema_update` save, restore,
  temporarily swap and average the trainable parameters (EGPO's restore-to-theta_t, OMWU's previous
  iterate, Nash-EMA's averaged opponent).

Costs (``N`` = rows = prompts x k, ``Lp``/``Lr`` = prompt/response lengths, ``V`` = vocabulary,
``P`` = parameter count):

========================================  ==========================================================
operation                                 cost
========================================  ==========================================================
``generate(mixture=0)``                   one prefill forward over ``(N, Lp)`` + ``Lr`` one-token
                                          forwards with the KV cache; memory: the cache,
                                          ``O(layers * N * (Lp + Lr) * hidden)``, plus ``(N, V)``
                                          float32 logits per step.  No graph (``torch.no_grad``).
``generate(mixture=w>0)``                 twice the above: policy and reference each keep their own
                                          KV cache (TRL's ``GeometricMixtureWrapper`` disables the
                                          cache and re-runs both models over the whole prefix at
                                          every step: ``O(Lr^2)`` token-forwards instead of
                                          ``O(Lr)``).  Under LoRA the "two models" are one module
                                          with the adapter toggled, so no second copy of the weights.
``sequence_logprobs(grad=False)``         one forward over ``(N, Lp + Lr)`` (chunked by
                                          ``batch_size``); logits are kept only for the ``Lr + 1``
                                          positions that predict response tokens, cast to float32:
                                          ``4 * N * (Lr + 1) * V`` bytes per chunk.
``sequence_logprobs(grad=True)``          the same forward with the autograd graph kept (activations
                                          of the whole chunk until ``backward``).
``reference()`` under LoRA                free (adapter toggle); no extra weights.
``reference()`` without LoRA              a frozen copy of the model: ``P`` extra parameters on the
                                          policy's device, made once, on first need.
``snapshot()`` / ``load_snapshot()``      one copy of the trainable parameters (adapter only under
                                          LoRA, ``P`` otherwise), on the policy device or the CPU.
``using(snapshot)``                       two parameter copies (save current, load given) + restore.
========================================  ==========================================================
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalLMPolicy", "Samples", "mixture_logprobs", "process_logprobs", "resolve_dtype"]

log = logging.getLogger(__name__)

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


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """``"float32"|"bfloat16"|"float16"`` (or aliases), a ``torch.dtype``, ``"auto"`` or ``None`` -> a dtype."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))}, 'auto', a torch.dtype or None; got {dtype!r}.")


# ----------------------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------------------


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
    prompts: list[str] = field(default_factory=list)
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
        """Rows ``index`` (a 1-D long/bool tensor or a list of ints) as a new ``Samples``."""
        idx = torch.as_tensor(index, device=self.prompt_index.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().squeeze(-1)
        idx = idx.long()
        rows = idx.tolist()
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

    Relation to TRL's ``GeometricMixtureWrapper``, which returns ``log_softmax(w * b + (1-w) * a)`` on
    the RAW logits: since ``log_softmax(a) = a - logsumexp(a)`` and the per-row constants cancel in the
    final normalisation, the two are the same distribution.  Normalising each model first only keeps
    the numbers well-scaled (logit offsets of two different models are arbitrary) and makes the
    mixture of log-probabilities explicit.  Neither is the SEQUENCE-level geometric mixture of the
    Nash-MD theory (which cannot be sampled autoregressively); see SPEC §3.2 and §11 note 3.
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


def _positions(mask: Tensor) -> Tensor:
    """Position ids from a (left-padded) attention mask: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


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
            model = _wrap_lora(model, lora)
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
    def from_pretrained(
        cls,
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
    ) -> CausalLMPolicy:
        """Load a causal LM (and its tokenizer) from the Hub or a local directory.

        Args:
            name_or_path: model id or path (anything ``AutoModelForCausalLM.from_pretrained`` takes).
                A directory holding a saved PEFT adapter (``adapter_config.json``) is loaded as base
                model + adapter, with the adapter trainable.
            tokenizer: a tokenizer object, or a name/path to load it from (default: ``name_or_path``).
            dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"``, a ``torch.dtype`` or ``None``
                (the library default, float32).
            device: e.g. ``"cuda"``, ``"cpu"``; ``None`` = CUDA when available, else CPU.
            lora: ``peft.LoraConfig`` kwargs (see the class docstring).
            reference: path of a separate frozen reference model (same tokenizer).  Default: see the
                class docstring.
            use_chat_template: see the class docstring.
            max_prompt_length: see the class docstring.
            trust_remote_code: passed to the ``from_pretrained`` calls.
            **model_kwargs: further ``from_pretrained`` kwargs (e.g. ``attn_implementation``).
        """
        import os

        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = resolve_dtype(dtype)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
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
        ref_model = None
        if reference is not None:
            ref_model = AutoModelForCausalLM.from_pretrained(reference, **kw)
        return cls(
            model,
            tokenizer,
            lora=lora,
            reference_model=ref_model,
            use_chat_template=use_chat_template,
            max_prompt_length=max_prompt_length,
            device=device,
        )

    def save_pretrained(self, path: str) -> None:
        """Save the model (the adapter only under PEFT) and the tokenizer to ``path``."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

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
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Detached copies of the trainable parameters ``{name: tensor}`` (adapter only under LoRA).

        ``device=None`` keeps them on the policy device; ``device="cpu"`` offloads them.
        """
        self.freeze_reference()
        with torch.no_grad():
            return {n: p.detach().to(device or p.device, copy=True) for n, p in self._trainable_named()}

    def load_snapshot(self, snapshot: Mapping[str, Tensor]) -> None:
        """Copy ``snapshot`` (from :meth:`snapshot`) into the trainable parameters, in place.

        In-place copies keep parameter identities, so an optimizer built on them stays valid.
        """
        self.freeze_reference()
        named = dict(self._trainable_named())
        missing = [n for n in named if n not in snapshot]
        unknown = [n for n in snapshot if n not in named]
        if missing or unknown:
            raise KeyError(
                f"Snapshot does not match the trainable parameters: missing {missing[:3]}, unknown {unknown[:3]}"
                f" (of {len(named)} trainable). Was it taken from this policy with the same LoRA setup?"
            )
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(snapshot[n])

    @contextmanager
    def using(self, snapshot: Mapping[str, Tensor]) -> Iterator[CausalLMPolicy]:
        """Temporarily load ``snapshot`` (e.g. to sample from the previous iterate); restore on exit."""
        saved = self.snapshot()
        self.load_snapshot(snapshot)
        try:
            yield self
        finally:
            self.load_snapshot(saved)

    def ema_update(self, ema_snapshot: dict[str, Tensor], beta: float) -> dict[str, Tensor]:
        """In place: ``ema <- (1 - beta) * ema + beta * theta`` for every trainable parameter; returns it.

        Nash-EMA's averaged opponent ``theta_bar_t = (1 - beta) theta_bar_{t-1} + beta theta_t``
        (SPEC §3.3): ``beta = 1`` copies the current parameters, ``beta = 0`` leaves ``ema`` unchanged.
        """
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ema beta must be in [0, 1], got {beta}.")
        with torch.no_grad():
            for n, p in self._trainable_named():
                if n not in ema_snapshot:
                    raise KeyError(f"EMA snapshot lacks parameter {n!r}; build it with policy.snapshot().")
                e = ema_snapshot[n]
                e.mul_(1.0 - beta).add_(p.detach().to(e.device, e.dtype), alpha=beta)
        return ema_snapshot

    # ------------------------------------------------------------------ tokenisation
    def format_prompts(self, prompts: Sequence[str]) -> list[str]:
        """Prompts as the model sees them: through the chat template (``add_generation_prompt=True``)
        when it is used, unchanged otherwise."""
        prompts = _check_strings(prompts, "prompts")
        if not self.use_chat_template:
            return list(prompts)
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
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
        self,
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
        responses = _check_strings(responses, "responses")
        prompts = _check_strings(prompts, "prompts")
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
    def generate(
        self,
        prompts: Sequence[str],
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
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> Samples:
        """Sample ``k`` responses per prompt (prompt-major rows) with a KV-cached decoding loop.

        At each step the next-token log-probs are those of the sampling model (the policy, or
        ``model_override``: ``"reference"``, a module or another ``CausalLMPolicy`` sharing the
        tokenizer); with ``mixture = w > 0`` they are the token-level geometric mixture
        :func:`mixture_logprobs` of that model and the reference ``mu``.  Then temperature, top-k and
        top-p (:func:`process_logprobs`) and a categorical draw (argmax with ``do_sample=False``).
        A row stops at its first EOS; later positions hold the pad id with mask 0.

        Deterministic given ``generator`` (a ``torch.Generator``) or ``seed``; with neither, the
        global torch RNG is used.  Runs under ``torch.no_grad`` in eval mode (restored afterwards);
        tensors come back on the policy device.  ``batch_size`` bounds the rows decoded at once.
        """
        prompts = _check_strings(prompts, "prompts")
        if not prompts:
            raise ValueError("generate: prompts is empty.")
        if k < 1:
            raise ValueError(f"generate: k must be >= 1, got {k}.")
        if max_new_tokens < 1:
            raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}.")
        if not 0.0 <= mixture <= 1.0:
            raise ValueError(f"generate: mixture must be in [0, 1], got {mixture}.")
        if do_sample:
            process_logprobs(torch.zeros(1, 2), temperature, top_k, top_p)  # validate once
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))

        ids, mask = self.encode_prompts(prompts)  # (B, Lp)
        n = len(prompts)
        rows = torch.arange(n, device=ids.device).repeat_interleave(k)  # (N,) prompt-major
        step = batch_size or len(rows)
        if step < 1:
            raise ValueError(f"generate: batch_size must be >= 1, got {batch_size}.")

        sampler, sampler_ctx = self._resolve_model(model_override)
        modules = [sampler] + ([self.model] if self.is_peft or self._ref_model is not None else [])
        was_training = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            parts = []
            for start in range(0, len(rows), step):
                r = rows[start : start + step]
                p_ids, p_mask = ids[r], mask[r]
                resp, fin = self._decode(
                    sampler,
                    sampler_ctx,
                    p_ids,
                    p_mask,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=top_k,
                    do_sample=do_sample,
                    mixture=mixture,
                    generator=generator,
                )
                r_mask = _response_mask(resp, fin, self.eos_token_ids)
                resp = resp.masked_fill(r_mask == 0, self.pad_token_id)
                texts = self.tokenizer.batch_decode(resp, skip_special_tokens=True)
                parts.append(
                    Samples(
                        prompt_index=r,
                        prompt_ids=p_ids,
                        prompt_mask=p_mask,
                        response_ids=resp,
                        response_mask=r_mask,
                        texts=texts,
                        prompts=[prompts[i] for i in r.tolist()],
                        finished=fin,
                    )
                )
        finally:
            for m, t in zip(modules, was_training):
                m.train(t)
        return Samples.concatenate(parts, self.pad_token_id)

    def _forward_last(self, model: Any, ids: Tensor, mask: Tensor, pos: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """One cached forward; returns float32 logits of the last position ``(B, V)`` and the cache."""
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        return out.logits[:, -1, :].float(), out.past_key_values

    def _decode(
        self,
        sampler: Any,
        sampler_ctx: Any,
        p_ids: Tensor,
        p_mask: Tensor,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        do_sample: bool,
        mixture: float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """The decoding loop: ``(response ids (N, T), finished (N,) bool)``; T <= max_new_tokens."""
        n = p_ids.shape[0]
        dev = p_ids.device
        eos = torch.tensor(self.eos_token_ids, device=dev)
        use_ref = mixture > 0.0
        attn = p_mask.clone()  # (N, Lp + t)
        pos = _positions(p_mask)  # (N, Lp)
        with sampler_ctx():
            logits_s, cache_s = self._forward_last(sampler, p_ids, attn, pos, None)
        if use_ref:
            with self.reference() as ref:
                logits_r, cache_r = self._forward_last(ref, p_ids, attn, pos, None)
        next_pos = pos[:, -1:] + 1  # (N, 1)
        finished = torch.zeros(n, dtype=torch.bool, device=dev)
        out: list[Tensor] = []
        for t in range(max_new_tokens):
            logp = mixture_logprobs(logits_s, logits_r, mixture) if use_ref else torch.log_softmax(logits_s, -1)
            if do_sample:
                logp = process_logprobs(logp, temperature, top_k, top_p)
                probs = logp.exp()
                if generator is not None and generator.device != probs.device:
                    tok = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(dev)
                else:
                    tok = torch.multinomial(probs, 1, generator=generator)
                tok = tok.squeeze(-1)
            else:
                tok = logp.argmax(-1)  # (N,)
            tok = torch.where(finished, torch.full_like(tok, self.pad_token_id), tok)
            out.append(tok)
            finished = finished | torch.isin(tok, eos)
            if bool(finished.all()) or t == max_new_tokens - 1:
                break
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            step_ids = tok[:, None]
            with sampler_ctx():
                logits_s, cache_s = self._forward_last(sampler, step_ids, attn, next_pos, cache_s)
            if use_ref:
                with self.reference() as ref:
                    logits_r, cache_r = self._forward_last(ref, step_ids, attn, next_pos, cache_r)
            next_pos = next_pos + 1
        return torch.stack(out, dim=1), finished

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
        pos = _positions(mask)
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


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _response_mask(resp: Tensor, finished: Tensor, eos_ids: Sequence[int]) -> Tensor:
    """1 up to and including the first EOS of each row (every position if none), 0 after.  ``(N, T)`` long."""
    is_eos = torch.isin(resp, torch.tensor(list(eos_ids), device=resp.device))
    # positions strictly after the first EOS: cumulative count of EOS before them > 0
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~after).long()


def _check_strings(xs: Any, label: str) -> list[str]:
    if isinstance(xs, str):
        raise TypeError(f"{label} must be a list of strings, got a single string; wrap it: [{xs[:30]!r}].")
    xs = list(xs)
    bad = [type(x).__name__ for x in xs if not isinstance(x, str)]
    if bad:
        raise TypeError(f"{label} must be strings; got {bad[0]} entries.")
    return xs


def _wrap_lora(model: Any, lora: Mapping[str, Any]) -> Any:
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
