"""The engines of the vLLM backend: :class:`LocalEngine` (a ``vllm.LLM`` in this process, colocate mode) and
:class:`RemoteEngine` (an HTTP client of :mod:`nashalign.llm.vllm_server`, server mode), with the same three
operations (generate, score, load weights) on token ids.  Colocated engines are cached per model configuration
(:func:`get_local_engine`).  ``vllm`` is imported only when an engine is built.  The public names are re-exported
by :mod:`nashalign.llm.vllm_backend`, whose module docstring describes the modes and the weight sync.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Sequence
from typing import Any

import torch

from nashalign.llm.generation import SamplingSettings, VLLMOptions
from nashalign.llm.vllm_export import _base_config, engine_config_dir, serialize_weights

__all__ = ["LocalEngine", "RemoteEngine", "get_local_engine", "close_engines"]

log = logging.getLogger(__name__)

_ENGINES: dict[str, LocalEngine] = {}


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
