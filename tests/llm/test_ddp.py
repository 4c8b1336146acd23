"""Two processes on the CPU (DDP over gloo, launched as users launch it): ranks end bit-identical and every
reported count is the global one (metrics.jsonl, the trainer's counters, eval_queries)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DRIVER = r'''
import hashlib, json, sys
import torch
from nashalign.algorithms import get_algorithm
from nashalign.llm.policy import CausalLMPolicy
from nashalign.llm.synthetic import build_task
from nashalign.llm.trainer import NashTrainer, TrainerConfig

model_dir, out = sys.argv[1], sys.argv[2]
task = build_task()
cfg = TrainerConfig(iterations=2, prompts_per_iteration=2, max_new_tokens=4, epochs=1, minibatch_size=4,
                    learning_rate=1e-2, cpu=True, num_threads=1, progress=False, save_final_model=False,
                    output_dir=out)
policy = CausalLMPolicy.from_pretrained(model_dir)
trainer = NashTrainer(policy, get_algorithm("omwu", eta=0.5), task.oracle(), task.prompts, cfg)
trainer.train()
digest = hashlib.sha256()
for name, p in sorted(policy.model.named_parameters()):
    digest.update(name.encode()); digest.update(p.detach().cpu().numpy().tobytes())
rank = trainer.accelerator.process_index
record = {"rank": rank, "world": trainer.accelerator.num_processes, "params": digest.hexdigest(),
          "queries": trainer.queries, "eval_queries": trainer.eval_queries, "last": trainer.history[-1]}
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(record, fh)
'''


def test_two_process_ddp_ranks_identical_and_counts_global(tiny_lm_dir, tmp_path):
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if launcher is None:  # pragma: no cover - accelerate is a dependency of the llm extra
        pytest.skip("the accelerate launcher is not installed")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    cmd = [launcher, "launch", "--config_file", str(ROOT / "conf" / "accelerate" / "ddp.yaml"),
           "--num_processes", "2", "--main_process_port", "29533", str(driver), tiny_lm_dir, str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["params"] == ranks[1]["params"]  # DDP kept the replicas bit-identical
    # OMWU, opponent estimator: B * k * (opponents: current 2x, previous) samples per process and iteration.
    B, k, procs, iters = 2, 2, 2, 2
    per_process_iteration = B * k * 2  # two opponents (coef 2 on pi_t, -1 on pi_{t-1}), one sample each
    assert ranks[0]["queries"] == ranks[1]["queries"] == procs * iters * per_process_iteration
    assert ranks[0]["eval_queries"] == ranks[1]["eval_queries"] == procs * iters * B
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # written once (main process), not per rank
    assert rows[-1]["queries"] == ranks[0]["queries"] and rows[-1]["eval_queries"] == ranks[0]["eval_queries"]
    assert rows[-1]["queries_iter"] == procs * per_process_iteration
    assert rows[-1]["rows"] == procs * B  # loss rows summed over processes
    stable = [{k: v for k, v in r["last"].items() if k != "time_s"} for r in ranks]
    assert stable[0] == stable[1]  # every rank holds the same global metrics
