"""A judge behind an OpenAI-compatible HTTP endpoint (vLLM, SGLang, TGI, llama.cpp, Ollama, hosted APIs).

For each pair the judge reads ``template.format(prompt=x, first=a, second=b)`` and answers with one of two
verdict tokens (``"A"``: the first response is better, ``"B"``: the second).  The answer is

* from log-probabilities (``mode="logprobs"``), one request per pair asking for the top-``K`` log-probs of the
  first generated token: with ``ℓ_A`` the log-sum-exp over the returned tokens that spell ``A`` (``"A"``,
  ``" A"``, ...) and likewise ``ℓ_B``,

      P(a ≻ b | x) = exp(ℓ_A) / (exp(ℓ_A) + exp(ℓ_B)),

  exact up to the server's arithmetic (``stderr = 0``).  When only one verdict is among the top ``K``, the
  other's log-prob is bounded by the smallest returned one and that bound is used (a conservative answer);
* from ``k`` sampled verdicts (``mode="sample"``, or ``"auto"`` when the server returns no log-probs): with
  ``n_A`` and ``n_B`` the verdicts that start with ``A`` / ``B`` (others are discarded), ``P = n_A / n`` with
  ``n = n_A + n_B`` and ``stderr = sqrt(P (1 - P) / n)``; :meth:`ServedJudgeOracle.judge` returns ``n``.

Judges have a position bias: ask both orders and combine them with
:func:`~nashalign.oracles.wrappers.symmetrize` (``conf/oracle/served.yaml`` does).

Requests run concurrently on an asyncio loop (at most ``max_concurrency`` in flight, at most ``rate_limit``
started per second), each with a ``timeout``.  429, 408, 5xx, connection errors, timeouts and unreadable
bodies are retried up to ``max_retries`` times after ``min(max_backoff, backoff * 2**attempt)`` seconds with
jitter (uniform in ``[d/2, d]``), or after the server's ``Retry-After`` when that is longer; other 4xx fail at
once.  Giving up raises :class:`~nashalign.oracles.base.OracleError` naming the endpoint and the query.

The API key is read from the environment variable named by ``api_key_env`` at each call: it is never stored on
the object, so it cannot reach a ``repr``, a pickle, a log line or a config dump.  The HTTP client is ``httpx``
(``pip install 'nashalign[served]'``; ``httpx2``, which ``huggingface_hub`` ships, is used when ``httpx`` is
absent), imported when the first request is made.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nashalign.oracles.base import Batch, OracleBase, OracleError, as_list, batch_len, describe_pair
from nashalign.oracles.judge import DEFAULT_JUDGE_TEMPLATE

__all__ = ["ServedJudgeOracle", "Judgements", "DEFAULT_JUDGE_TEMPLATE"]

MODES = ("auto", "logprobs", "sample")
APIS = ("chat", "completions")
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def _http() -> Any:
    """The ``httpx`` module (or its API-compatible ``httpx2``)."""
    try:
        import httpx

        return httpx
    except ImportError:
        pass
    try:
        import httpx2

        return httpx2
    except ImportError as err:
        raise ImportError(
            "ServedJudgeOracle needs an HTTP client: pip install 'nashalign[served]' (installs httpx)."
        ) from err


class _Transient(Exception):
    """A failure worth retrying (status, connection, timeout, unreadable body); ``wait``: the server's Retry-After."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass(frozen=True)
class Judgements:
    """What :meth:`ServedJudgeOracle.judge` returns for ``B`` pairs.

    Attributes:
        p: ``(B,)`` float64, ``P(first ≻ second | prompt)``.
        stderr: ``(B,)`` float64 standard error (0 for log-prob answers; ``sqrt(p(1-p)/n)`` for sampled ones).
        n: ``(B,)`` long, valid sampled verdicts (0 for log-prob answers).
        method: per pair, ``"logprobs"`` or ``"sample"``.
    """

    p: torch.Tensor
    stderr: torch.Tensor
    n: torch.Tensor
    method: tuple[str, ...]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


class ServedJudgeOracle(OracleBase):
    """``P(first ≻ second | prompt)`` from a judge served behind an OpenAI-compatible API (module docstring).

    Args:
        base_url: the server's API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the model name the server expects.
        api: ``"chat"`` (``/chat/completions``; the template is the user turn) or ``"completions"``.
        template: ``str.format`` pattern with ``{prompt}``, ``{first}``, ``{second}`` (None: the default).
        choices: the two verdicts (first better, second better).
        system_prompt: an optional system turn (chat only).
        mode: ``"logprobs"``, ``"sample"`` or ``"auto"`` (log-probs, falling back to sampling per query when the
            server returns none or neither verdict is among them).
        top_logprobs: ``K``, log-probs asked per request (servers cap it; vLLM's default cap is 20).
        samples: ``k``, verdicts sampled per pair in sample mode (one request with ``n = k``).
        temperature: sampling temperature in sample mode (log-prob requests use 1.0).
        max_tokens: tokens generated per sampled verdict.
        extra_body: extra JSON fields of every request (e.g. vLLM's ``{"allowed_token_ids": [...]}``).
        max_concurrency: requests in flight at once.
        rate_limit: requests started per second (None: no limit).
        timeout: seconds per request (connect, read, write).
        max_retries: retries after the first attempt.
        backoff: the first back-off; attempt ``a`` waits ``min(max_backoff, backoff * 2**a)``, jittered.
        max_backoff: the longest back-off.
        max_retry_after: the longest ``Retry-After`` honoured (longer ones are cut to it).
        api_key_env: the NAME of the environment variable holding the API key (sent as a Bearer token).
        name: a display name.

    Attributes:
        requests: HTTP attempts made so far.
        retries: attempts retried so far.
        last_latencies: seconds per pair of the last call, from its first attempt's start (after waiting for a
            free slot) to its answer, retries included.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: str = "chat",
        template: str | None = None,
        choices: Sequence[str] = ("A", "B"),
        system_prompt: str | None = None,
        mode: str = "auto",
        top_logprobs: int = 20,
        samples: int = 8,
        temperature: float = 1.0,
        max_tokens: int = 1,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int = 32,
        rate_limit: float | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        api_key_env: str | None = None,
        name: str | None = None,
    ) -> None:
        template = DEFAULT_JUDGE_TEMPLATE if template is None else template
        self._check_args(base_url, model, api, template, choices, mode)
        self.base_url = base_url.rstrip("/")
        self.model, self.api, self.template, self.mode = model, api, template, mode
        self.choices = (str(choices[0]), str(choices[1]))
        self.system_prompt = system_prompt
        self.top_logprobs, self.samples = _int(top_logprobs, "top_logprobs"), _int(samples, "samples")
        self.max_tokens, self.max_concurrency = _int(max_tokens, "max_tokens"), _int(max_concurrency, "max_concurrency")
        self.max_retries = _int(max_retries, "max_retries", low=0)
        self.temperature = _positive(temperature, "temperature", zero=True)
        self.timeout = _positive(timeout, "timeout")
        self.rate_limit = None if rate_limit is None else _positive(rate_limit, "rate_limit")
        self.backoff = _positive(backoff, "backoff", zero=True)
        self.max_backoff = _positive(max_backoff, "max_backoff", zero=True)
        self.max_retry_after = _positive(max_retry_after, "max_retry_after", zero=True)
        self.extra_body = dict(extra_body or {})
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env.isidentifier()):
            raise ValueError(
                f"api_key_env must be the NAME of an environment variable (e.g. 'OPENAI_API_KEY'), got a "
                f"{type(api_key_env).__name__} that is not one; never put the key itself in a config."
            )
        self.api_key_env = api_key_env
        self.name = name or f"ServedJudgeOracle({self.model!r} @ {self.base_url})"
        self.requests = 0
        self.retries = 0
        self.last_latencies: list[float] = []
        self._logprobs_ok = mode != "sample"

    @staticmethod
    def _check_args(base_url: Any, model: Any, api: str, template: str, choices: Sequence[str], mode: str) -> None:
        from nashalign.oracles._hf import check_template

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {base_url!r}.")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be the served model's name (a non-empty string), got {model!r}.")
        if api not in APIS:
            raise ValueError(f"api must be one of {list(APIS)}, got {api!r}.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
        check_template(template)
        if len(choices) != 2 or str(choices[0]) == str(choices[1]) or not all(str(c).strip() for c in choices):
            raise ValueError(f"choices must be two different non-empty verdicts, got {choices!r}.")

    # ------------------------------------------------------------------------------------------- identity
    def decoding(self) -> dict[str, Any]:
        """The settings that change answers (part of :meth:`identity`)."""
        d: dict[str, Any] = {"api": self.api, "mode": self.mode, "choices": list(self.choices)}
        if self.mode != "sample":
            d["top_logprobs"] = self.top_logprobs
        if self.mode != "logprobs":
            d.update(samples=self.samples, temperature=self.temperature, max_tokens=self.max_tokens)
        d["extra_body"] = self.extra_body
        return d

    def identity(self) -> str:
        """``endpoint + model + template + decoding``: what the persistent cache keys answers by (no secrets)."""
        text = json.dumps([self.template, self.system_prompt, self.decoding()], sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return f"served:{self.base_url}|{self.model}|{digest}"

    def __repr__(self) -> str:
        return (
            f"ServedJudgeOracle(base_url={self.base_url!r}, model={self.model!r}, api={self.api!r}, "
            f"mode={self.mode!r}, api_key_env={self.api_key_env!r})"
        )

    # ------------------------------------------------------------------------------------------- requests
    def format(self, prompt: str, first: str, second: str) -> str:
        """The judge's text for one pair."""
        return self.template.format(prompt=prompt, first=first, second=second)

    def _payload(self, text: str, sample: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model}
        if self.api == "chat":
            msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            body["messages"] = [*msgs, {"role": "user", "content": text}]
        else:
            body["prompt"] = text
        if sample:
            body.update(n=self.samples, temperature=self.temperature, max_tokens=self.max_tokens)
        elif self.api == "chat":
            body.update(max_tokens=1, temperature=1.0, logprobs=True, top_logprobs=self.top_logprobs)
        else:
            body.update(max_tokens=1, temperature=1.0, logprobs=self.top_logprobs)
        body.update(self.extra_body)
        return ("/chat/completions" if self.api == "chat" else "/completions"), body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise OracleError(
                    f"{self.name}: the environment variable {self.api_key_env!r} (api_key_env) is not set; export "
                    "the API key there."
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def _post(self, client: Any, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        http = _http()
        self.requests += 1
        try:
            resp = await client.post(self.base_url + path, json=body, headers=headers)
        except http.TimeoutException as err:
            raise _Transient(f"timed out after {self.timeout:g} s ({type(err).__name__})") from err
        except http.TransportError as err:
            raise _Transient(f"connection failed ({type(err).__name__}: {err})") from err
        if resp.status_code in _RETRY_STATUS or resp.status_code >= 500:
            wait = parse_retry_after(resp.headers.get("retry-after"))
            raise _Transient(f"HTTP {resp.status_code}: {_snippet(resp.text)}", wait)
        if resp.status_code >= 400:
            raise OracleError(
                f"{self.name}: {self.base_url}{path} answered HTTP {resp.status_code} (not retried): "
                f"{_snippet(resp.text)}"
            )
        try:
            data = resp.json()
        except ValueError as err:
            raise _Transient(f"unreadable JSON body: {_snippet(resp.text)}") from err
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _Transient(f"a body without 'choices': {_snippet(resp.text)}")
        return data

    def _delay(self, attempt: int, wait: float | None) -> float:
        d = min(self.max_backoff, self.backoff * 2.0**attempt)
        d = d / 2 + random.uniform(0.0, d / 2)
        if wait is not None:
            d = max(d, min(wait, self.max_retry_after))
        return d

    async def _query(self, state: _CallState, i: int, text: str) -> tuple[float, float, int, str]:
        """One pair's answer ``(p, stderr, n, method)``, with retries."""
        start: float | None = None  # the first attempt's start: waiting for a free slot is not latency
        headers = self._headers()
        last: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            try:
                async with state.semaphore:
                    await state.throttle(self.rate_limit)
                    start = time.perf_counter() if start is None else start
                    out = await self._answer(state.client, text, headers)
                state.latencies[i] = time.perf_counter() - start
                return out
            except _Transient as err:
                last = err
                if attempt < self.max_retries:
                    self.retries += 1
                    await asyncio.sleep(self._delay(attempt, err.wait))
            except OracleError as err:  # not retryable (a 4xx, a missing key, no verdict): name the query
                raise OracleError(f"{err} [query #{i}: {describe_pair(*state.pairs[i])}]") from err
        raise OracleError(
            f"{self.name}: gave up on query #{i} ({describe_pair(*state.pairs[i])}) at {self.base_url} after "
            f"{self.max_retries + 1} attempts; last error: {last}"
        ) from last

    async def _answer(self, client: Any, text: str, headers: dict[str, str]) -> tuple[float, float, int, str]:
        if self.mode != "sample" and self._logprobs_ok:
            path, body = self._payload(text, sample=False)
            data = await self._post(client, path, body, headers)
            p = self._from_logprobs(data)
            if p is not None:
                return p, 0.0, 0, "logprobs"
            if self.mode == "logprobs":
                raise OracleError(
                    f"{self.name}: the server returned no log-probabilities with either verdict "
                    f"{self.choices!r} among the top {self.top_logprobs}; use mode='sample' or 'auto'."
                )
        path, body = self._payload(text, sample=True)
        data = await self._post(client, path, body, headers)
        return (*self._from_samples(data), "sample")

    def _top_logprobs(self, data: dict[str, Any]) -> dict[str, float] | None:
        lp = data["choices"][0].get("logprobs")
        if not lp:
            return None
        if self.api == "chat":
            content = lp.get("content") or []
            if not content:
                return None
            return {str(t["token"]): float(t["logprob"]) for t in content[0].get("top_logprobs") or []}
        tops = lp.get("top_logprobs") or []
        return {str(k): float(v) for k, v in (tops[0] or {}).items()} if tops else None

    def _from_logprobs(self, data: dict[str, Any]) -> float | None:
        try:
            tops = self._top_logprobs(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise _Transient(f"malformed logprobs in the body ({type(err).__name__}: {err})") from err
        if not tops:
            if self.mode == "auto":
                self._logprobs_ok = False  # this server returns none: sample from now on
            return None
        pools = [[v for t, v in tops.items() if t.strip() == c and math.isfinite(v)] for c in self.choices]
        if not pools[0] and not pools[1]:
            return None
        floor = min(v for v in tops.values() if math.isfinite(v))
        la, lb = (_logsumexp(pool) if pool else floor for pool in pools)
        return 1.0 / (1.0 + math.exp(lb - la))

    def _from_samples(self, data: dict[str, Any]) -> tuple[float, float, int]:
        counts = [0, 0]
        for choice in data["choices"]:
            try:
                text = choice["message"]["content"] if self.api == "chat" else choice["text"]
            except (KeyError, TypeError) as err:
                raise _Transient(f"a malformed choice in the body: {_snippet(str(choice))}") from err
            verdict = str(text or "").strip()
            hits = [verdict.startswith(c) for c in self.choices]
            if hits[0] != hits[1]:
                counts[0 if hits[0] else 1] += 1
        n = counts[0] + counts[1]
        if n == 0:
            raise _Transient(f"none of the {len(data['choices'])} sampled verdicts starts with {self.choices!r}")
        p = counts[0] / n
        return p, math.sqrt(p * (1.0 - p) / n), n

    # ------------------------------------------------------------------------------------------- calls
    async def ajudge(self, prompts: Batch, first: Batch, second: Batch) -> Judgements:
        """:meth:`judge` as a coroutine (for callers that already run an event loop)."""
        B = batch_len(prompts, first, second, self.name)
        pairs = list(zip(as_list(prompts), as_list(first), as_list(second)))
        texts = [self.format(str(x), str(a), str(b)) for x, a, b in pairs]
        http = _http()
        limits = http.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        async with http.AsyncClient(timeout=http.Timeout(self.timeout), limits=limits) as client:
            state = _CallState(client, asyncio.Semaphore(self.max_concurrency), pairs, [0.0] * B)
            tasks = [asyncio.ensure_future(self._query(state, i, t)) for i, t in enumerate(texts)]
            try:
                results = await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
        self.last_latencies = state.latencies
        return Judgements(
            p=torch.tensor([r[0] for r in results], dtype=torch.float64),
            stderr=torch.tensor([r[1] for r in results], dtype=torch.float64),
            n=torch.tensor([r[2] for r in results], dtype=torch.long),
            method=tuple(r[3] for r in results),
        )

    def judge(self, prompts: Batch, first: Batch, second: Batch) -> Judgements:
        """Answers with their uncertainty (:class:`Judgements`) for one order of each pair."""
        return _run(self.ajudge(prompts, first, second))

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        return self.judge(prompts, first, second).p


class _CallState:
    """What the concurrent queries of one call share: the client, the semaphore and the rate limiter."""

    def __init__(self, client: Any, semaphore: asyncio.Semaphore, pairs: list[tuple], latencies: list[float]) -> None:
        self.client, self.semaphore, self.pairs, self.latencies = client, semaphore, pairs, latencies
        self._lock = asyncio.Lock()
        self._next = 0.0

    async def throttle(self, rate: float | None) -> None:
        """Start at most ``rate`` requests per second (evenly spaced)."""
        if rate is None:
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            now = loop.time()
            wait = self._next - now
            self._next = max(now, self._next) + 1.0 / rate
        if wait > 0:
            await asyncio.sleep(wait)


def _run(coro: Any) -> Any:
    """Run ``coro`` to completion, in a helper thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="served-judge")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _int(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _positive(value: Any, name: str, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 or (zero and value == 0)):
        raise ValueError(f"{name} must be a number {'>= 0' if zero else '> 0'}, got {value!r}.")
    return float(value)
