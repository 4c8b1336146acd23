"""Loopback plumbing for testing and benchmarking served judges: a tiny judge model, a vLLM server, a fault proxy.

Used by ``tests/oracles/test_served*.py`` and ``benchmarks/bench_served.py``; nothing here is imported by
``import nashalign``.  Everything binds to 127.0.0.1 only.

* :func:`build_tiny_judge` trains a byte-level BPE tokenizer and a tiny llama (seconds, CPU) whose next token
  after the judge template is ``"A"`` or ``"B"``, favouring the longer response (a length-biased judge);
* :class:`VLLMServer` starts ``vllm.entrypoints.openai.api_server`` with a given interpreter and stops it;
* :class:`FaultProxy` forwards POSTs to a server and injects faults on a schedule (slow answers, 429 with
  ``Retry-After``, 500, malformed JSON, dropped connections), counting the requests that reach the server.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nashalign.oracles.judge import DEFAULT_JUDGE_TEMPLATE

__all__ = ["build_tiny_judge", "judge_pairs", "VLLMServer", "FaultProxy", "free_port", "FAULTS"]

FAULTS = ("ok", "slow", "429", "500", "malformed", "drop")
_WORDS = "red blue green cat dog sun moon tree river stone fast slow big small old new warm cold".split()
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def judge_pairs(n: int, seed: int = 0, max_words: int = 6) -> tuple[list[str], list[str], list[str]]:
    """``n`` random (prompt, first, second) triples of short word strings (responses of 1..max_words words)."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(k))

    prompts = [words(rng.randint(1, 3)) for _ in range(n)]
    first = [words(rng.randint(1, max_words)) for _ in range(n)]
    second = [words(rng.randint(1, max_words)) for _ in range(n)]
    return prompts, first, second


def build_tiny_judge(out_dir: str | os.PathLike[str], seed: int = 0, steps: int = 150) -> str:
    """Save a tiny llama judge (model + tokenizer with a plain chat template) to ``out_dir``; returns the path.

    Trained for ``steps`` AdamW steps on :data:`DEFAULT_JUDGE_TEMPLATE` prompts to answer ``"A"`` when the first
    response has more words and ``"B"`` otherwise, so both verdicts carry most of the next-token mass.
    """
    import torch

    from nashalign.llm.tiny import build_causal_lm, build_tokenizer

    prompts, first, second = judge_pairs(512, seed=seed)
    texts = [DEFAULT_JUDGE_TEMPLATE.format(prompt=x, first=a, second=b) for x, a, b in zip(prompts, first, second)]
    tok = build_tokenizer([*texts, "A", "B", " A", " B"], vocab_size=320)
    tok.chat_template = CHAT_TEMPLATE
    ids = [tok.convert_tokens_to_ids(c) for c in ("A", "B")]
    model = build_causal_lm(tok, hidden_size=64, num_layers=2, num_heads=2, max_positions=256, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed + 1)
    model.train()
    for _ in range(steps):
        batch = rng.sample(range(len(texts)), 16)
        enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True, padding_side="left")
        logits = model(**enc).logits[:, -1, :]
        target = torch.tensor([ids[0] if len(first[i].split()) > len(second[i].split()) else ids[1] for i in batch])
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 (CPU, float32, eager), as a context manager.

    Args:
        python: the interpreter with vLLM installed; model_dir: a saved model; served_name: its API name.
        startup_timeout: seconds to wait for ``/v1/models``; log_path: where the server's output goes.
    """

    def __init__(
        self,
        python: str,
        model_dir: str,
        served_name: str = "tiny-judge",
        startup_timeout: float = 900.0,
        log_path: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.python, self.model_dir, self.served_name = python, model_dir, served_name
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.log_path = log_path or str(Path(model_dir).parent / f"vllm-{self.port}.log")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> VLLMServer:
        cmd = [
            self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
            "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "256", "--enforce-eager", *self.extra_args,
        ]  # fmt: skip
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("PYTHONPATH", None)  # the server needs nothing of nashalign
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the vLLM server exited with {self.proc.returncode}; log: {self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"the vLLM server did not answer within {self.startup_timeout:g} s; log: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``) that injects faults.

    ``schedule(n) -> fault`` picks the fault of the ``n``-th request (0-based) among :data:`FAULTS`; the
    default answers every request normally.  ``forwarded`` counts requests passed to the server (a ``slow``
    and a ``malformed`` one are forwarded; ``slow`` is answered after ``slow_s`` seconds), ``seen`` every request, ``faults`` the faults
    injected by kind; ``headers`` keeps the last request's headers.
    """

    def __init__(self, upstream: str, schedule: Callable[[int], str] | None = None, slow_s: float = 3.0) -> None:
        self.upstream = upstream.rstrip("/")
        host, _, port = self.upstream.removeprefix("http://").partition(":")
        self._target = (host, int(port.split("/")[0]))
        self.schedule = schedule or (lambda n: "ok")
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.seen = 0
        self.forwarded = 0
        self.faults: dict[str, int] = {}
        self.headers: dict[str, str] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reset(self, schedule: Callable[[int], str] | None = None) -> None:
        with self.lock:
            self.seen = self.forwarded = 0
            self.faults = {}
            if schedule is not None:
                self.schedule = schedule

    def _next_fault(self, headers: dict[str, str]) -> str:
        with self.lock:
            fault = self.schedule(self.seen)
            self.seen += 1
            self.headers = headers
            if fault != "ok":
                self.faults[fault] = self.faults.get(fault, 0) + 1
            if fault in ("ok", "slow", "malformed"):
                self.forwarded += 1
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}.")
        return fault

    def forward(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self._target, timeout=120)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = proxy._next_fault(dict(self.headers.items()))
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "429":
                    return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "1"})
                if fault == "500":
                    return self._send(500, b'{"error": "internal error"}')
                status, data = proxy.forward(self.path, body)
                if fault == "malformed":
                    return self._send(200, data[: max(1, len(data) // 2)])
                if fault == "slow":
                    time.sleep(proxy.slow_s)
                try:
                    self._send(status, data)
                except OSError:  # the client gave up (timeout) and closed the connection
                    self.close_connection = True

        return Handler

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def json_get(url: str) -> Any:
    """GET ``url`` and parse its JSON body."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())
