#!/usr/bin/env bash
# One prepared GPU run (under 8 minutes in total), then a short summary:
#   1. the gpu-marked tests (every LLM path in bf16: sampling incl. the mixture, every algorithm's trainer
#      iteration with full fine-tuning and LoRA, the opponent bank, gradient checkpointing, syncs; the tabular
#      torch solver on CUDA);
#   2. the tabular exact-step throughput with --device cuda (benchmarks/bench_tabular.py, part a);
#   3. the LLM trainer benchmark on a Qwen2-0.5B-shaped model built from config in bf16
#      (benchmarks/bench_llm_memory.py --model qwen0p5b), results under benchmarks/results/.
#
#   benchmarks/gpu_check.sh             # on the GPU machine
#   benchmarks/gpu_check.sh --dry-run   # here: the same steps at CPU size, nothing written (GPU tests skip)
#   CUDA_VISIBLE_DEVICES= benchmarks/gpu_check.sh   # the same as --dry-run
#
# The GPU image has torch, transformers, accelerate, peft, pytest but not cvxpy, clarabel, hydra-core or
# omegaconf: put their cp312 wheels in .whl/ (ignored by git, 5.8 MB) and they are installed into a scratch
# directory on PYTHONPATH, without network and without dependencies (scs and osqp are left out: 43 MB, and
# cvxpy imports without them; the tabular code uses Clarabel). To fetch them (PyPI only):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       cvxpy==1.9.3 clarabel==0.11.1 hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3      # sdist only on PyPI: build the wheel
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
declare -a SUMMARY=()
step() {  # step NAME TIMEOUT_S CMD...: run with a time limit, record ok / FAILED / TIMEOUT and the seconds
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "=== $name (limit ${limit}s): $*"
  timeout --signal=KILL "$limit" "$@"
  local rc=$? t=$(( $(date +%s) - t0 ))
  local status=ok
  [[ $rc -ne 0 ]] && status="FAILED (rc $rc)"
  [[ $rc -eq 137 ]] && status="TIMEOUT"
  SUMMARY+=("$(printf '%-34s %-14s %4ss' "$name" "$status" "$t")")
}

if compgen -G ".whl/*.whl" > /dev/null; then
  SITE=${NASHALIGN_WHEEL_SITE:-/tmp/nashalign-gpu-site}
  if ! $PY -c "import cvxpy, hydra, omegaconf" 2> /dev/null; then
    if ! $PY -m pip --version > /dev/null 2>&1; then  # no pip: a wheel is a zip of its site-packages files
      step "unpack .whl/ (no pip)" 120 $PY -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$SITE" .whl/*.whl
    else
      step "install .whl/ (no deps, offline)" 120 $PY -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
    fi
    export PYTHONPATH="$PYTHONPATH:$SITE"
  fi
fi
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2> /dev/null || echo 0)
[[ $DRY -eq 1 ]] && CUDA=0
$PY - << 'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("transformers", "accelerate", "peft", "cvxpy", "hydra", "omegaconf"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as err:  # noqa: BLE001 - report and go on: the LLM parts need none of the optional ones
        print(name, "NOT IMPORTABLE:", type(err).__name__, err)
EOF

# 1. gpu-marked tests (they skip cleanly without CUDA)
step "pytest -m gpu" 180 $PY -m pytest -q -m gpu -p no:cacheprovider tests/llm/test_gpu.py tests/test_game.py

if [[ $CUDA -eq 1 ]]; then
  GPU=$($PY -c "import torch, re; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
  # 2. tabular exact steps on CUDA (part a: throughput and bandwidth)
  step "bench_tabular --device cuda" 90 $PY benchmarks/bench_tabular.py --device cuda --parts a --n 1000 \
    --C 100 --repeat 2 --machine "cuda-$GPU"
  # 3. the LLM trainer on a Qwen2-0.5B-shaped model in bf16 (full fine-tuning and LoRA, every algorithm)
  step "bench_llm_memory qwen0p5b bf16" 300 $PY benchmarks/bench_llm_memory.py --model qwen0p5b --device cuda \
    --dtype bfloat16 --iterations 2 --prompts 4 --tokens 16 --threads 4 --machine "cuda-$GPU" --write
else
  echo "no CUDA (or --dry-run): the CPU-size versions of steps 2 and 3, nothing written"
  step "bench_tabular (cpu, tiny)" 120 $PY benchmarks/bench_tabular.py --parts a --n 10 --C 1 --repeat 1 --no-write
  step "bench_llm_memory (cpu, tiny)" 240 $PY benchmarks/bench_llm_memory.py --model tiny --algorithms egpo omwu \
    --iterations 1 --prompts 2 --tokens 4
fi

echo
echo "=== summary ($(( $(date +%s) - START )) s in total; budget 480 s)"
printf '%s\n' "${SUMMARY[@]}"
if [[ $CUDA -eq 1 ]]; then
  $PY - "$GPU" << 'EOF'
import json, sys
from pathlib import Path
gpu = sys.argv[1]
res = Path("benchmarks/results")
mem = res / f"llm_memory-cuda-{gpu}.json"
if mem.exists():
    rows = json.loads(mem.read_text())["rows"]
    print(f"LLM trainer, Qwen2-0.5B shape, bf16 ({len(rows)} runs): samples/s and peak MB per algorithm")
    for r in rows:
        print(f"  {r['mode']:<4} {r['algorithm']:<11} {r['samples_per_s']!s:>8} samples/s  peak {r['peak_mb']:>9} MB"
              f"  copies dev {r['dev_copies']} host {r['host_copies']}")
tab = res / f"tabular-cuda-{gpu}.md"
if tab.exists():
    print(f"tabular exact steps: see {tab} (bandwidth columns: torch CUDA GB/s vs the GPU's HBM peak)")
EOF
fi
