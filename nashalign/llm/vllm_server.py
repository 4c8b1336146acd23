"""A small vLLM server for ``trainer.generation=vllm`` with ``trainer.vllm.mode=server``.

    python -m nashalign.llm.vllm_server --model path/to/model --port 8011 [--dtype float32] [--max-model-len 2048]

``--model`` is a directory with the model's ``config.json`` (what ``save_pretrained`` writes); its weights are
loaded when present, else the engine starts with dummy weights (the trainer pushes every parameter before its
first sample anyway).  The trainer then talks to it with :class:`nashalign.llm.vllm_backend.RemoteEngine`:

====================  =====================================================================================
route                 does
====================  =====================================================================================
``GET /health``       ``{"model": ..., "weight_pushes": n}``
``POST /generate``    JSON ``{prompt_ids, k, seeds, stop, max_new_tokens, temperature, top_p, top_k}`` ->
                      ``{"outputs": [[token ids] * k] * len(prompt_ids)}`` (EOS kept)
``POST /logprobs``    JSON ``{prompt_ids, response_ids}`` -> ``{"logprobs": [sum log pi(y|x)]}``
``POST /weights``     a safetensors blob of HF-named parameters -> loaded in place (``reload_weights``)
====================  =====================================================================================

One request at a time (the engine is not re-entrant); bind to localhost unless the network is trusted: the
``/weights`` route replaces the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from nashalign.llm.generation import SamplingSettings, VLLMOptions

__all__ = ["build_engine", "make_handler", "main"]

log = logging.getLogger(__name__)


def build_engine(args: argparse.Namespace) -> Any:
    """A :class:`~nashalign.llm.vllm_backend.LocalEngine` on ``args.model`` (real weights if the dir has them)."""
    from nashalign.llm.vllm_backend import LocalEngine

    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise ValueError(f"--model {args.model!r} has no config.json; pass a directory written by save_pretrained.")
    has_weights = any(f.endswith((".safetensors", ".bin")) for f in os.listdir(args.model))
    options = VLLMOptions(
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_gb=args.kv_cache_gb,
        enforce_eager=not args.no_enforce_eager,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    return LocalEngine(
        args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        options=options,
        seed=args.seed,
        load_format="auto" if has_weights else "dummy",
    )


def make_handler(engine: Any, model: str) -> type[BaseHTTPRequestHandler]:
    """The request handler class serving ``engine`` (see the module docstring for the routes)."""
    from nashalign.llm.vllm_backend import deserialize_weights

    state = {"pushes": 0}

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/health":
                self._reply(200, {"model": model, "weight_pushes": state["pushes"]})
            else:
                self._reply(404, {"error": f"unknown route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                if self.path == "/weights":
                    engine.load_weights(deserialize_weights(body))
                    state["pushes"] += 1
                    self._reply(200, {"ok": True, "weight_pushes": state["pushes"]})
                elif self.path == "/generate":
                    req = json.loads(body)
                    settings = SamplingSettings(
                        max_new_tokens=int(req["max_new_tokens"]),
                        temperature=float(req["temperature"]),
                        top_p=float(req["top_p"]),
                        top_k=int(req["top_k"]),
                    )
                    outs = engine.generate(req["prompt_ids"], int(req["k"]), req["seeds"], settings, req["stop"])
                    self._reply(200, {"outputs": outs})
                elif self.path == "/logprobs":
                    req = json.loads(body)
                    self._reply(200, {"logprobs": engine.logprobs(req["prompt_ids"], req["response_ids"])})
                else:
                    self._reply(404, {"error": f"unknown route {self.path}"})
            except (KeyError, ValueError, TypeError) as err:
                self._reply(400, {"error": f"{type(err).__name__}: {err}"})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug(fmt, *args)

    return Handler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="directory with config.json (weights optional)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--kv-cache-gb", type=int, default=1, help="CPU KV cache (GiB)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--no-enforce-eager", action="store_true", help="allow CUDA graphs / compilation")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    engine = build_engine(args)
    server = HTTPServer((args.host, args.port), make_handler(engine, args.model))
    print(f"nashalign vLLM server on http://{args.host}:{server.server_port} (model {args.model})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    finally:
        server.server_close()
        engine.close()


if __name__ == "__main__":
    main()
