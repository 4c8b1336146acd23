"""The reporting half of :class:`~nashalign.llm.trainer.NashTrainer`: an iteration's metrics (global over
processes), the win rate against the anchor, the evaluation callback and ``metrics.jsonl`` / trackers."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import torch

from nashalign.llm import _setup

__all__ = ["TrainerReporting"]


class TrainerReporting:
    """Mixed into ``NashTrainer``; uses its ``config``, ``alg``, ``accelerator``, ``oracle`` and counters."""

    def _iteration_metrics(self, t: int, phase_metrics: list[dict[str, Any]], anchor: Any, start: float) -> dict:
        alg, cfg = self.alg, self.config
        metrics: dict[str, Any] = {"iteration": t + 1}
        for i, pm in enumerate(phase_metrics):
            metrics.update({(k if alg.phases == 1 else f"phase{i}/{k}"): v for k, v in pm.items()})
        if alg.phases > 1:  # the iteration's loss is the final phase's
            metrics["loss"] = phase_metrics[-1].get("loss", float("nan"))
            metrics["signal_mean"] = phase_metrics[-1]["signal_mean"]
        metrics["lr"] = float(self.scheduler.get_last_lr()[0])
        train_s = time.perf_counter() - start
        if cfg.track_win_rate and anchor is not None:
            metrics["win_rate_vs_anchor"] = self._win_rate_vs_anchor(*anchor)
        gen = self._gen_stats
        seconds = gen.get("seconds", 0.0)
        metrics.update(self._local, train_s=train_s, generation_s=seconds)
        metrics["samples_per_s"] = gen.get("sequences", 0) / seconds if seconds > 0 else float("nan")
        metrics["tokens_per_s"] = float(gen.get("tokens", 0)) / seconds if seconds > 0 else float("nan")
        metrics["peak_memory_mb"] = _setup.peak_memory_mb(self.accelerator.device)
        metrics = _setup.reduce_metrics(self.accelerator, metrics)
        self.queries += int(metrics["queries_iter"])
        self.eval_queries += int(metrics.pop("eval_queries_iter"))
        metrics["queries"], metrics["eval_queries"] = self.queries, self.eval_queries
        ev = cfg.eval_every
        if self._evaluates and ((ev and self.iteration % ev == 0) or self.iteration == cfg.iterations):
            metrics.update(self._evaluate())
        metrics["time_s"] = time.perf_counter() - start
        return metrics

    def _win_rate_vs_anchor(self, prompts: list[str], anchor_samples: Any) -> float:
        """Mean ``P(y_new > y_anchor)``: one fresh sample of ``pi_{t+1}`` per prompt vs one of ``pi_t``."""
        per = len(anchor_samples) // len(prompts)  # prompt-major rows: the first sample of each prompt
        anchor = anchor_samples.select(torch.arange(len(prompts)) * per)
        fresh = self._generate(prompts, 1)
        p = torch.as_tensor(self.oracle(prompts, fresh, anchor)).float()
        self._local["eval_queries_iter"] += len(prompts)
        return float(p.mean())

    @property
    def _evaluates(self) -> bool:
        """An ``evaluate`` callback or held-out prompts (``config.eval_prompts``) are set."""
        return self.evaluate_fn is not None or bool(self.config.eval_prompts)

    def _evaluate(self) -> dict[str, float]:
        out = dict(self.evaluate_fn(self.policy)) if self.evaluate_fn is not None else {}
        if self.config.eval_prompts:  # held-out win rates against the reference
            out.update(self._heldout())
        return {str(k): float(v) for k, v in out.items()}

    def _heldout(self) -> dict[str, float]:
        """:func:`nashalign.llm.evaluate.heldout_metrics` on ``config.eval_prompts`` (queries count as eval_queries)."""
        from nashalign.llm.evaluate import heldout_metrics
        from nashalign.oracles import as_oracle

        cfg = self.config
        oracle = self.oracle if cfg.eval_oracle is None else as_oracle(cfg.eval_oracle)
        if cfg.eval_oracle is None and cfg.missing_eos_penalty:
            oracle = oracle.inner  # heldout_metrics applies the penalty itself
        with _setup.gathered(self.accelerator, self.model):
            out = heldout_metrics(
                self.policy, cfg.eval_prompts, oracle, k=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature, seed=cfg.seed + 10_007 * self.iteration,
                missing_eos_penalty=cfg.missing_eos_penalty,
            )
        self.eval_queries += int(out["eval/queries"]) * self.accelerator.num_processes  # each rank queried them
        return out

    def _log(self, metrics: Mapping[str, Any]) -> None:
        acc = self.accelerator
        if not acc.is_main_process:
            return
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"algorithm": self.alg.name, **metrics}) + "\n")
        if self._trackers_started:
            acc.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=int(metrics["iteration"]))
