"""Session fixtures for the language-model tests: the synthetic task and tiny saved LMs (no downloads).

Built once per session with the library's own builders (``nashalign.llm.synthetic`` / ``tiny``) and
saved to a temporary directory, so every test (and the trainer tests) loads models through the real
``CausalLMPolicy.from_pretrained(path)`` code path.

* ``synthetic_task``: ``build_task()`` (three prompts: RPS, a population game, a transitive game);
* ``tiny_lm_dir``: the WARMED-UP tiny llama for that task (``build_tiny_policy(task, seed=0, out_dir)``),
  whose distribution over the valid responses is the benchmark's reference ``mu``;
* ``synthetic_mu``: that distribution, ``(C, n + 1)``, measured once;
* ``random_lm_dir``: an un-trained tiny llama with the same tokenizer (long, EOS-free samples: what
  generation tests need);
* ``load_policy``: a factory ``load_policy(path=None, **kwargs)`` returning a fresh ``CausalLMPolicy``
  (default path: ``tiny_lm_dir``), so tests may train it freely.
"""

from __future__ import annotations

import pytest

# The Hugging Face offline variables are set once, in the root tests/conftest.py (loaded first).




@pytest.fixture(scope="session")
def synthetic_task():
    from nashalign.llm.synthetic import build_task

    return build_task()


@pytest.fixture(scope="session")
def tiny_lm_dir(synthetic_task, tmp_path_factory) -> str:
    """Path of the warmed-up tiny LM (model + tokenizer) for ``synthetic_task``."""
    from nashalign.llm.synthetic import build_tiny_policy

    path = str(tmp_path_factory.mktemp("tiny_lm"))
    build_tiny_policy(synthetic_task, seed=0, out_dir=path, device="cpu")
    return path


@pytest.fixture(scope="session")
def synthetic_mu(synthetic_task, tiny_lm_dir):
    """The warmed-up LM's exact ``(C, n + 1)`` distribution (valid classes, then the invalid mass)."""
    from nashalign.llm.policy import CausalLMPolicy
    from nashalign.llm.synthetic import response_distribution

    return response_distribution(CausalLMPolicy.from_pretrained(tiny_lm_dir, device="cpu"), synthetic_task)


@pytest.fixture(scope="session")
def random_lm_dir(synthetic_task, tmp_path_factory) -> str:
    """Path of an untrained tiny llama sharing the task tokenizer."""
    from nashalign.llm.synthetic import build_task_tokenizer
    from nashalign.llm.tiny import build_causal_lm

    path = str(tmp_path_factory.mktemp("random_lm"))
    tok = build_task_tokenizer(synthetic_task)
    build_causal_lm(tok, hidden_size=32, num_layers=2, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def load_policy(tiny_lm_dir):
    """``load_policy(path=None, **from_pretrained_kwargs)``: a fresh CPU ``CausalLMPolicy``."""
    from nashalign.llm.policy import CausalLMPolicy

    def load(path: str | None = None, **kwargs):
        kwargs.setdefault("device", "cpu")
        return CausalLMPolicy.from_pretrained(path or tiny_lm_dir, **kwargs)

    return load
