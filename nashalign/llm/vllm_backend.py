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

import json
import logging
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from typing import Any

import torch

from nashalign.algorithms.base import OPPONENT_KINDS
from nashalign.llm._decode import HFSampler, Samples, response_mask
from nashalign.llm.generation import SamplingSettings, VLLMOptions

__all__ = [
    "VLLMSampler",
    "LocalEngine",
    "RemoteEngine",
    "export_weights",
    "engine_config_dir",
    "get_local_engine",
    "close_engines",
]

log = logging.getLogger(__name__)

_ENGINES: dict[str, LocalEngine] = {}


# =============================================================================================== weights
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


# =============================================================================================== engines
class LocalEngine:
    """A ``vllm.LLM`` in this process with the three operations the trainer needs (token ids in and out)."""

    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str,
        max_model_len: int,
        options: VLLMOptions,
        seed: int = 0,
        load_format: str = "dummy",
    ) -> None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: weights handed over as tensors
        if not torch.cuda.is_available():
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(options.kv_cache_gb))
        from vllm import LLM

        kw: dict[str, Any] = dict(
            model=model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=options.enforce_eager,
            load_format=load_format,
            skip_tokenizer_init=True,
            seed=seed,
            enable_prefix_caching=options.enable_prefix_caching,
            tensor_parallel_size=options.tensor_parallel_size,
        )
        if torch.cuda.is_available():
            kw["gpu_memory_utilization"] = options.gpu_memory_utilization
        self.can_sleep = bool(options.sleep) and _sleep_available()
        if options.sleep and not self.can_sleep:
            log.info("trainer.vllm.sleep: this platform has no vLLM sleep mode; the engine stays awake.")
        if self.can_sleep:
            kw["enable_sleep_mode"] = True
        kw.update(options.engine_kwargs or {})
        self.llm = LLM(**kw)
        self.asleep = False

    def generate(
        self, prompt_ids: list[list[int]], k: int, seeds: list[int], settings: SamplingSettings, stop: list[int]
    ) -> list[list[list[int]]]:
        """``k`` continuations (token ids, EOS kept) of each prompt; continuation ``j`` of prompt ``i`` is its own
        request seeded with ``seeds[i * k + j]`` (vLLM gives the ``n`` children of one seeded request the same
        seed, hence the same sample, so ``n = 1`` per request)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if len(seeds) != len(prompt_ids) * k:
            raise ValueError(f"generate: need one seed per sample ({len(prompt_ids) * k}), got {len(seeds)}.")
        params = [
            SamplingParams(
                n=1,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                max_tokens=settings.max_new_tokens,
                stop_token_ids=list(stop),
                seed=int(s),
                detokenize=False,
            )
            for s in seeds
        ]
        requests = [TokensPrompt(prompt_token_ids=p) for p in prompt_ids for _ in range(k)]
        outs = self.llm.generate(requests, params, use_tqdm=False)
        flat = [list(o.outputs[0].token_ids) for o in outs]
        return [flat[i * k : (i + 1) * k] for i in range(len(prompt_ids))]

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
        """``log pi(y | x)`` summed over each response's tokens, from vLLM's prompt log-probs (float64 sum)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        full = [TokensPrompt(prompt_token_ids=p + r) for p, r in zip(prompt_ids, response_ids)]
        outs = self.llm.generate(
            full, SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False), use_tqdm=False
        )
        res = []
        for o, r in zip(outs, response_ids):
            toks, lp = o.prompt_token_ids, o.prompt_logprobs
            res.append(float(sum(lp[j][toks[j]].logprob for j in range(len(toks) - len(r), len(toks)))))
        return res

    def load_weights(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        """Load every parameter in place (vLLM's ``reload_weights``) and drop the stale prefix cache."""
        self.wake_up()
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": list(named), "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.can_sleep and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        shutdown = getattr(getattr(self.llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()


def _sleep_available() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())


def get_local_engine(model: Any, *, dtype: str, max_model_len: int, options: VLLMOptions, seed: int = 0) -> LocalEngine:
    """The process's engine for ``model``'s configuration (built on first use, then shared)."""
    cfg = _base_config(model)
    key = json.dumps([cfg.to_json_string(use_diff=False), dtype, max_model_len, options.to_dict()], sort_keys=True)
    if key not in _ENGINES:
        path, _ = engine_config_dir(model)
        _ENGINES[key] = LocalEngine(path, dtype=dtype, max_model_len=max_model_len, options=options, seed=seed)
    return _ENGINES[key]


def close_engines() -> None:
    """Shut down every cached colocated engine."""
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.close()


class RemoteEngine:
    """The same operations as :class:`LocalEngine`, against :mod:`nashalign.llm.vllm_server` over HTTP."""

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.can_sleep = False

    def _post(self, route: str, body: bytes, content_type: str = "application/json") -> Any:
        req = urllib.request.Request(self.url + route, data=body, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except OSError as err:
            raise ConnectionError(
                f"vLLM server at {self.url} did not answer {route}: {err}. Start it with "
                "`python -m nashalign.llm.vllm_server --model <dir> --port <port>` and set trainer.vllm.server_url."
            ) from err

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=self.timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def generate(
        self, prompt_ids: list[list[int]], k: int, seeds: list[int], settings: SamplingSettings, stop: list[int]
    ) -> list[list[list[int]]]:
        body = dict(prompt_ids=prompt_ids, k=k, seeds=[int(s) for s in seeds], stop=list(stop))
        body.update(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
        )
        return self._post("/generate", json.dumps(body).encode())["outputs"]

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
        body = json.dumps(dict(prompt_ids=prompt_ids, response_ids=response_ids)).encode()
        return self._post("/logprobs", body)["logprobs"]

    def load_weights(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        self._post("/weights", serialize_weights(named), "application/octet-stream")

    def sleep(self) -> None:
        return None

    def wake_up(self) -> None:
        return None

    def close(self) -> None:
        return None


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
