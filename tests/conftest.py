"""Shared test setup: offline Hugging Face, float64 numpy, a seeded generator."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The one place the test suite goes offline (no conftest below sets these again): nothing is downloaded,
# every Hugging Face model in the tests is built from a config.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the one test-case registry, tests/algorithms/cases.py, is imported as `cases` by tests outside that folder too
sys.path.insert(0, str(Path(__file__).parent / "algorithms"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded numpy generator per test."""
    return np.random.default_rng(20240611)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors are fastest on one thread, and CI's 2 cores are not oversubscribed by intra-op threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
