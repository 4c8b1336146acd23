"""The vLLM generation backend: an engine in the trainer's process (colocate) or in a server, kept in sync.

:class:`VLLMSampler` is a sampler (:mod:`nashalign.llm.generation`) with the call of
:class:`~nashalign.llm._decode.HFSampler`.  Prompts are tokenised by the policy
(:meth:`~nashalign.llm.policy.CausalLMPolicy.encode_prompts`: the HF path's chat template and truncation), sent
to vLLM as token ids, and the returned token ids become :class:`~nashalign.llm._decode.Samples` with the HF
path's masks (the EOS counts, padding after it).  Log-probs for the loss are always computed by the
HF model; vLLM only samples.

Weight sync (the algorithm's part of the backend).  The engine is built from the policy's config with dummy
weights and receives every parameter of ``pi_theta`` from :func:`export_weights` before its first sample; after
that, before any sample whose key differs from what the engine holds (:class:`VLLMSampler`), the policy's model
(holding, in place, the parameters the opponent bank put there for that kind) is exported and loaded with vLLM's
in-place ``reload_weights``, and the prefix cache is reset.  Under LoRA the export is the
merged ``W + (alpha / r) B A`` of every adapted layer (``peft``'s own ``get_delta_weight``), so the engine runs
a plain model.  Every push is the full parameter set (simple and exact; in colocate mode an in-process copy of
``4 P`` bytes in float32; ``benchmarks/bench_generation.py`` counts the pushes per iteration and times the
iteration with them).

Modes:

* colocate: :class:`LocalEngine`, a ``vllm.LLM`` in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so
  weights are handed over as tensors, never serialised), one per training process (Accelerate rank); on
  GPUs it takes ``gpu_memory_utilization`` of the device, and with ``sleep: true`` it is put to sleep (level 2)
  during training and woken, then re-synced, at the next sample.  Engines are cached per model
  configuration, so trainers built one after another in a process (tests, benchmarks) share one.
* server: :class:`RemoteEngine`, an HTTP client of :mod:`nashalign.llm.vllm_server`; weights travel as one
  safetensors blob per push.

Nash-MD's mixture opponent ``pi^{1-w} mu^w`` is sampled by the HF path
(:class:`~nashalign.llm._decode.HFSampler`) under both backends: it needs the logits of ``pi`` AND ``mu`` for
the same prefix at every token, and vLLM samples each request from one model's logits (a logits processor sees
only those; two engines would need one round trip per token).  The HF sampler keeps one KV cache per model and
is exact (tested against the enumerated mixture in ``tests/vllm_backend``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nashalign.algorithms.base import OPPONENT_KINDS
from nashalign.llm._decode import HFSampler, Samples, response_mask
from nashalign.llm.generation import SamplingSettings, VLLMOptions
from nashalign.llm.vllm_engines import LocalEngine, RemoteEngine, close_engines, get_local_engine
from nashalign.llm.vllm_export import (
    _base_config,
    _dtype_name,
    deserialize_weights,
    engine_config_dir,
    export_weights,
    serialize_weights,
)

__all__ = [
    "VLLMSampler",
    "LocalEngine",
    "RemoteEngine",
    "export_weights",
    "engine_config_dir",
    "get_local_engine",
    "close_engines",
    "serialize_weights",
    "deserialize_weights",
]


# =============================================================================================== the sampler
class VLLMSampler:
    """``trainer.generation=vllm``: :class:`~nashalign.llm._decode.HFSampler`'s call, sampled by a vLLM engine.

    ``sampler(policy, prompts, k, *, weights="current", **settings) -> Samples`` with the HF sampler's settings.
    ``mixture > 0`` (Nash-MD's ``pi^{1-w} mu^w``) and ``model_override`` (another model than the policy) are
    drawn by the HF sampler (see the module docstring); ``do_sample=False`` is vLLM's greedy (temperature 0);
    ``batch_size`` is ignored (vLLM schedules its own batches).

    Weight sync: the engine holds the parameters of one key ``(model, weights, version, in-place versions)``:
    ``weights`` is the opponent kind the trainer says the model holds, ``version`` counts
    :meth:`weights_changed` calls, and the last entry is the sum of the parameters' in-place version counters
    (every ``copy_`` of a bank swap or checkpoint load moves it; fused optimizer kernels do not, hence the
    explicit :meth:`weights_changed` after every optimizer phase).  A sample under any other key pushes first.
    """

    name = "vllm"

    def __init__(
        self,
        policy: Any,
        options: VLLMOptions,
        *,
        max_new_tokens: int = 32,
        process_index: int = 0,
        num_processes: int = 1,
        engine: Any = None,
    ) -> None:
        self.options = options
        self._hf = HFSampler()
        self._version = 0
        self._loaded: tuple[Any, ...] | None = None
        self.pushes = 0
        if engine is not None:
            self.engine = engine
        elif options.mode == "server":
            self.engine = RemoteEngine(str(options.server_url), options.timeout_s)
        else:
            if num_processes > 1:
                # One engine per rank: vLLM joins the launcher's torch.distributed world.
                options.engine_kwargs.setdefault("distributed_executor_backend", "external_launcher")
            dtype = options.dtype or _dtype_name(next(policy.model.parameters()).dtype)
            max_len = options.max_model_len or _default_max_len(policy, max_new_tokens)
            self.engine = get_local_engine(
                policy.model, dtype=dtype, max_model_len=max_len, options=options, seed=process_index
            )

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
        _check_weights(weights)
        if mixture > 0.0 or (model_override is not None and model_override is not policy.model):
            return self._hf(
                policy, prompts, k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                top_k=top_k, do_sample=do_sample, mixture=mixture, model_override=model_override,
                generator=generator, batch_size=batch_size, weights=weights,
            )
        if k < 1:
            raise ValueError(f"generate: k must be >= 1, got {k}.")
        settings = SamplingSettings(
            max_new_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0, top_p=top_p, top_k=top_k
        )
        self.sync(policy, weights)
        ids, mask = policy.encode_prompts(list(prompts))  # (B, Lp) left-padded
        prompt_ids = [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu())]
        seeds = torch.randint(0, 2**31 - 1, (len(prompt_ids) * k,), generator=generator, device=_gen_device(generator))
        outs = self.engine.generate(prompt_ids, k, seeds.tolist(), settings, policy.eos_token_ids)
        return _to_samples(policy, list(prompts), k, ids, mask, outs)

    def weights_changed(self) -> None:
        """The parameters behind some opponent kind changed: push again before the next sample."""
        self._version += 1

    def release(self) -> None:
        """Sampling is over until the next call (training follows): a sleep-capable engine sleeps."""
        if self.engine.can_sleep:
            self.engine.sleep()
            self._loaded = None  # level-2 sleep drops the weights: push again after waking

    # ------------------------------------------------------------------ sync and scoring
    def _key(self, policy: Any, weights: str) -> tuple[Any, ...]:
        inplace = sum(p._version for p in policy.model.parameters())
        return (id(policy.model), weights, self._version, inplace)

    def sync(self, policy: Any, weights: str = "current") -> bool:
        """Push the model's parameters unless the engine already holds this key (class docstring); True if pushed."""
        key = self._key(policy, weights)
        if self._loaded == key:
            return False
        dev = next(policy.model.parameters()).device.type
        with torch.no_grad(), torch.autocast(dev, enabled=False):  # the LoRA merge in the parameters' dtype
            self.engine.load_weights(export_weights(policy.model))
        self._loaded = key
        self.pushes += 1
        return True

    def sequence_logprobs(self, policy: Any, samples: Samples) -> torch.Tensor:
        """The engine's ``log pi(y | x)`` of ``samples`` (``(N,)`` float64, CPU): what the weight-sync test compares."""
        pm, rm = samples.prompt_mask.bool().cpu(), samples.response_mask.bool().cpu()
        p = [row[m].tolist() for row, m in zip(samples.prompt_ids.cpu(), pm)]
        r = [row[m].tolist() for row, m in zip(samples.response_ids.cpu(), rm)]
        return torch.tensor(self.engine.logprobs(p, r), dtype=torch.float64)


def _check_weights(weights: str) -> None:
    if weights not in OPPONENT_KINDS:
        raise ValueError(f"weights must be one of {list(OPPONENT_KINDS)} (an opponent kind), got {weights!r}.")


def _default_max_len(policy: Any, max_new_tokens: int) -> int:
    """``max_prompt_length + max_new_tokens``, capped at the model's ``max_position_embeddings``."""
    limit = getattr(_base_config(policy.model), "max_position_embeddings", None)
    want = int(policy.max_prompt_length) + int(max_new_tokens)
    return min(want, int(limit)) if limit else want


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _to_samples(policy: Any, prompts: list[str], k: int, ids: torch.Tensor, mask: torch.Tensor, outs: list) -> Samples:
    """Prompt-major :class:`Samples` from vLLM's token ids, masked exactly as the HF sampler masks."""
    dev, pad, eos = policy.device, policy.pad_token_id, policy.eos_token_ids
    rows = [tok for per_prompt in outs for tok in per_prompt]
    if any(len(per_prompt) != k for per_prompt in outs) or len(outs) != len(prompts):
        raise RuntimeError(f"vLLM returned {[len(o) for o in outs]} samples per prompt, expected {k} each.")
    width = max(1, max(len(r) for r in rows))
    resp = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    finished = torch.tensor([bool(r) and r[-1] in eos for r in rows], dtype=torch.bool)
    r_mask = response_mask(resp, eos)
    r_mask &= (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
    resp = resp.masked_fill(r_mask == 0, pad)
    index = torch.arange(len(prompts)).repeat_interleave(k)
    return Samples(
        prompt_index=index.to(dev),
        prompt_ids=ids[index.to(ids.device)].to(dev),
        prompt_mask=mask[index.to(mask.device)].to(dev),
        response_ids=resp.to(dev),
        response_mask=r_mask.to(dev),
        texts=policy.tokenizer.batch_decode(resp, skip_special_tokens=True),
        prompts=[prompts[i] for i in index.tolist()],
        finished=finished.to(dev),
    )
