"""Generation backends of :class:`~nashalign.llm.trainer.NashTrainer`: who turns prompts into :class:`Samples`.

Every backend is a *sampler* with one call, ``sampler(policy, prompts, k, *, weights=..., **settings) ->
Samples`` (:class:`~nashalign.llm._decode.HFSampler`'s), passed as ``NashTrainer(sampler=...)`` or built from
``trainer.generation``:

* ``"hf"`` (the default and the reference): :class:`~nashalign.llm._decode.HFSampler`, the KV-cached decoding
  loop on the live ``transformers`` model;
* ``"vllm"``: :class:`nashalign.llm.vllm_backend.VLLMSampler`, a vLLM engine in the trainer's process
  (``vllm.mode: colocate``) or in a server (``vllm.mode: server``, :mod:`nashalign.llm.vllm_server`).

A sampler samples ``pi_theta`` for whatever parameters the policy's model holds at the call: the trainer's
:class:`~nashalign.llm.opponents.OpponentBank` swaps the previous iterate, EGPO's ``theta_t`` or the EMA into the
model in place, and ``weights`` names the opponent kind they are (``"current"``, ``"mixture"``, ``"previous"``,
``"half"``, ``"ema"``).  Two optional methods complete the protocol: ``weights_changed()``, called by the trainer
after every change of the parameters or of a bank slot (an optimizer phase, an EMA update, a checkpoint load), and
``release()``, called before each optimizer phase (vLLM with ``sleep: true`` frees its GPU memory there).  The
HF sampler needs neither; a backend holding its own copy of the weights (vLLM) re-pushes them before the next
sample whose ``(weights, version)`` differs from what it holds, so the engine always samples the policy the
algorithm names.

Importing this module imports neither ``vllm`` nor ``transformers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["GENERATION_BACKENDS", "SamplingSettings", "VLLMOptions", "make_sampler", "sampler_hook"]

GENERATION_BACKENDS = ("hf", "vllm")
VLLM_MODES = ("colocate", "server")


@dataclass(frozen=True)
class SamplingSettings:
    """The sampling settings a vLLM engine takes (``top_k = 0`` and ``top_p = 1`` disable the filters;
    ``temperature = 0`` is greedy).  ``batch_size`` is the HF loop's; vLLM schedules its own batches."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int | None = None


@dataclass
class VLLMOptions:
    """``trainer.vllm``: how the vLLM backend runs (validated here, without importing vLLM).

    Attributes:
        mode: ``"colocate"`` (an engine in each training process; one per data-parallel rank) or
            ``"server"`` (a separate server, :mod:`nashalign.llm.vllm_server`, that the trainer pushes weights to).
        server_url: the server's base URL (server mode), e.g. ``"http://127.0.0.1:8011"``.
        gpu_memory_utilization: fraction of the GPU the colocated engine may take (weights + KV cache).
        sleep: put the colocated engine to sleep (level 2: weights and KV cache freed) before each optimizer
            phase and wake it at the next sample; only where vLLM supports sleep mode (CUDA/ROCm/XPU), else
            ignored with a log line.
        dtype: engine dtype (``None`` = the policy's parameter dtype; log-probs then agree with HF to
            rounding of that dtype).
        max_model_len: longest prompt + response in tokens (``None``: max_prompt_length + max_new_tokens).
        enforce_eager: no CUDA graphs / compilation (faster start, what the tests use).
        kv_cache_gb: CPU KV-cache size in whole GiB (``VLLM_CPU_KVCACHE_SPACE``; CPU only).
        tensor_parallel_size: GPUs per colocated engine (1 = one engine per rank).
        enable_prefix_caching: vLLM prefix caching (the cache is reset after every weight push).
        timeout_s: HTTP timeout of each server call.
        engine_kwargs: further ``vllm.LLM`` keyword arguments (colocate mode).
    """

    mode: str = "colocate"
    server_url: str | None = None
    gpu_memory_utilization: float = 0.3
    sleep: bool = False
    dtype: str | None = None
    max_model_len: int | None = None
    enforce_eager: bool = True
    kv_cache_gb: int = 1
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    timeout_s: float = 600.0
    engine_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in VLLM_MODES:
            raise ValueError(f"trainer.vllm.mode must be one of {list(VLLM_MODES)}, got {self.mode!r}.")
        if self.mode == "server" and not (isinstance(self.server_url, str) and self.server_url.startswith("http")):
            raise ValueError(
                "trainer.vllm.mode=server needs trainer.vllm.server_url, e.g. 'http://127.0.0.1:8011' (start the "
                "server with: python -m nashalign.llm.vllm_server --model <dir> --port 8011)."
            )
        if not (isinstance(self.gpu_memory_utilization, (int, float)) and 0 < self.gpu_memory_utilization <= 1):
            raise ValueError(
                f"trainer.vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}."
            )
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 2):
            raise ValueError(f"trainer.vllm.max_model_len must be an integer >= 2 or null, got {self.max_model_len!r}.")
        if isinstance(self.kv_cache_gb, bool) or not (isinstance(self.kv_cache_gb, int) and self.kv_cache_gb >= 1):
            raise ValueError(f"trainer.vllm.kv_cache_gb must be an integer >= 1 (GiB), got {self.kv_cache_gb!r}.")
        if isinstance(self.tensor_parallel_size, bool) or not (
            isinstance(self.tensor_parallel_size, int) and self.tensor_parallel_size >= 1
        ):
            raise ValueError(
                f"trainer.vllm.tensor_parallel_size must be an integer >= 1, got {self.tensor_parallel_size!r}."
            )
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f"trainer.vllm.timeout_s must be > 0, got {self.timeout_s!r}.")
        if self.engine_kwargs is not None and not isinstance(self.engine_kwargs, Mapping):
            raise ValueError(f"trainer.vllm.engine_kwargs must be a mapping or null, got {self.engine_kwargs!r}.")
        self.engine_kwargs = dict(self.engine_kwargs or {})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | VLLMOptions | None) -> VLLMOptions:
        """From ``trainer.vllm`` (a dict, an OmegaConf node or None); unknown keys raise naming the known ones."""
        if isinstance(values, VLLMOptions):
            return values
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown trainer.vllm setting(s) {unknown}; known settings: {known}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_sampler(
    backend: str,
    policy: Any,
    options: Mapping[str, Any] | VLLMOptions | None = None,
    *,
    max_new_tokens: int = 32,
    process_index: int = 0,
    num_processes: int = 1,
    given: Any = None,
) -> Any:
    """The sampler named by ``trainer.generation`` (``"hf"`` or ``"vllm"``) for ``policy``.

    ``options`` is ``trainer.vllm`` (ignored by ``"hf"``).  ``given``: a sampler passed to the trainer, returned
    as is (only with ``backend="hf"``, the default: two choices of backend raise).  vLLM is imported only here.
    """
    if given is not None:
        if backend != "hf":
            raise ValueError(f"pass either NashTrainer(sampler=...) or trainer.generation={backend!r}, not both.")
        return given
    if backend == "hf":
        from nashalign.llm._decode import HFSampler

        return HFSampler()
    if backend == "vllm":
        from nashalign.llm.vllm_backend import VLLMSampler

        return VLLMSampler(
            policy,
            VLLMOptions.from_mapping(options),
            max_new_tokens=max_new_tokens,
            process_index=process_index,
            num_processes=num_processes,
        )
    raise ValueError(f"trainer.generation must be one of {list(GENERATION_BACKENDS)}, got {backend!r}.")


def sampler_hook(sampler: Any, name: str) -> None:
    """Call ``sampler.weights_changed()`` / ``sampler.release()`` where the sampler has it (both are optional)."""
    hook = getattr(sampler, name, None)
    if callable(hook):
        hook()
