"""Online Nash learning on a causal LM: the llm app (run by path, configured by ``conf/llm/llm.yaml``).

    python llm/train.py                                   # nash_md on the known-equilibrium benchmark (tiny LM, CPU)
    python llm/train.py algorithm=egpo trainer.iterations=40
    python llm/train.py -m algorithm=nash_md,egpo,omd     # a sweep with Hydra's basic launcher
    python llm/train.py +experiment=lm_benchmark_demo     # `make demo`: exploitability before and after
    accelerate launch --config_file conf/accelerate/ddp.yaml llm/train.py model=hf model.name_or_path=... trainer=gpu_bf16

With ``data=synthetic`` it reproduces the known-equilibrium benchmark: the LM's exact exploitability and
KL to the regularised equilibrium are logged during training and printed before and after.  Everything
here is plumbing; the loop is :class:`nashalign.llm.trainer.NashTrainer`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nashalign.algorithms.registry import register_sweep_resolver

register_sweep_resolver()  # ${nashalign_algorithms:} (lm_benchmark's sweep), resolved before main runs
log = logging.getLogger("nashalign.llm.train")


@hydra.main(version_base="1.3", config_path="../conf/llm", config_name="llm")
def main(cfg: DictConfig) -> dict:
    from nashalign.configs import instantiate_algorithm  # imported here: --help stays free of the tabular schema
    from nashalign.llm.app import build_policy, load_data, select_oracle
    from nashalign.llm.synthetic import ExactEvaluator, response_distribution
    from nashalign.llm.trainer import NashTrainer, TrainerConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    trainer_values = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_values.get("output_dir") is None:
        trainer_values["output_dir"] = str(out_dir)
    if isinstance(trainer_values.get("eval_oracle"), dict):  # issue 17: a {_target_: ...} oracle node
        trainer_values["eval_oracle"] = instantiate(cfg.trainer.eval_oracle)
    config = TrainerConfig.from_mapping(trainer_values)  # bad values fail here, before any model is built
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    algorithm = instantiate_algorithm(cfg.algorithm)  # null keys = the constructor's defaults (not passed)

    from nashalign.llm._load import process_state

    # The distributed state first: every model (policy, reference, oracle) goes on THIS process's device.
    device = process_state(cpu=config.cpu).device
    task, prompts = load_data(cfg.data)
    oracle = select_oracle(cfg, task, device=device)  # a conflicting oracle setting fails before any model is built
    policy = build_policy(cfg.model, task, prompts, device=device)

    evaluate = None
    if task is not None:
        evaluator = ExactEvaluator(task, cfg.benchmark.tau, response_distribution(policy, task))
        per_prompt = bool(cfg.benchmark.per_prompt)

        def evaluate(p):
            return evaluator(p).as_dict(per_prompt=per_prompt)

    (out_dir / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")
    if task is not None:  # the exact target the run is measured against, for the sweep's summary.md
        targets = {"kind": "regularized Nash pi*_tau", "tau": evaluator.tau, "target": evaluator.target.tolist()}
        (out_dir / "targets.json").write_text(json.dumps(targets), encoding="utf-8")
    trainer = NashTrainer(policy, algorithm, oracle, prompts, config, evaluate=evaluate)
    history = trainer.train()

    summary = {"algorithm": algorithm.name, "iterations": trainer.iteration, "queries": trainer.queries}
    if trainer.accelerator.is_main_process:
        if task is not None:
            first, last = history[0], history[-1]
            lines = [f"{algorithm.name} on the known-equilibrium benchmark (tau = {cfg.benchmark.tau}):"]
            for key, label in (
                ("exploitability", "exploitability"),
                ("kl_target", "KL(pi*_tau || pi)"),
                ("invalid_mass", "invalid mass"),
            ):
                if key in first and key in last:
                    lines.append(f"  {label:<18} before {first[key]:.4f}  ->  after {last[key]:.4f}")
                    summary[f"{key}_before"], summary[f"{key}_after"] = first[key], last[key]
            print("\n".join(lines))
        print(f"{trainer.iteration} iterations, {trainer.queries} oracle queries; metrics: {out_dir / 'metrics.jsonl'}")
        if config.eval_prompts:  # issue 17: the held-out evaluation's curves
            from nashalign.llm.runs import collect_runs, plot_curves

            keys = ("eval/win_rate", "eval/lc_win_rate")
            plot_curves(collect_runs(out_dir), out_dir / "eval_curves.png", keys, title="held-out evaluation")
            last = history[-1]
            summary.update({k: last[k] for k in keys if k in last})
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


if __name__ == "__main__":
    main()
