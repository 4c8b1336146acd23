"""The sampling half of :class:`~nashalign.llm.trainer.NashTrainer`: a phase's prompts, the sampler each
opponent kind maps to (module docstring of :mod:`nashalign.llm.trainer`), generation with its timing
statistics, and the feedback the estimator collects from them."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from nashalign.algorithms.base import OPPONENT_KINDS, Opponent
from nashalign.estimators import Feedback, estimate
from nashalign.llm import _setup

__all__ = ["TrainerSampling"]


class TrainerSampling:
    """Mixed into ``NashTrainer``; uses its ``config``, ``alg``, ``accelerator``, ``sampler``, ``bank``, ``oracle``,
    ``prompts``, ``estimator``, ``k``, ``generator`` and counters."""

    def _prompt_batch(self, t: int, phase: int) -> list[str]:
        """The prompts of (iteration, phase): a seeded cycle through the prompt set (no RNG state needed)."""
        acc = self.accelerator
        slot = (t * self.alg.phases + phase) * acc.num_processes + acc.process_index
        return _setup.prompt_cycle(self.prompts, self.config.prompts_per_iteration, slot, self.config.seed)

    def _generate(self, prompts: list[str], k: int, *, mixture: float = 0.0, weights: str = "current") -> Any:
        cfg, start = self.config, time.perf_counter()
        with _setup.gathered(self.accelerator, self.model), self.accelerator.autocast():
            samples = self.sampler(
                self.policy, prompts, k, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                top_p=cfg.top_p, top_k=cfg.top_k, mixture=mixture, generator=self.generator,
                batch_size=cfg.generation_batch_size, weights=weights,  # the kind the model holds now
            )
        if cfg.missing_eos_penalty:  # responses carry their finished flag to the oracle
            from nashalign.llm.evaluate import tag_finished

            samples.texts = tag_finished(samples.texts, samples.finished)
        stats = self._gen_stats
        stats["seconds"] = stats.get("seconds", 0.0) + time.perf_counter() - start
        stats["sequences"] = stats.get("sequences", 0) + len(samples)
        stats["tokens"] = stats.get("tokens", 0) + samples.response_mask.sum()  # a device tensor, read once
        return samples

    def _sampler(self, prompts: list[str], phase: int) -> Callable[[Opponent | None, torch.Tensor, int], Any]:
        """The estimator's sampler.  In phase 0 the live model is ``theta_t``; in a later phase it is the half
        step and ``theta_t`` is swapped in from the bank for ``current`` / ``mixture`` samples."""

        def sample(opp: Opponent | None, prompt_index: torch.Tensor, k: int) -> Any:
            batch = [prompts[i] for i in prompt_index.tolist()]  # a host index: no sync
            kind = "current" if opp is None else opp.kind
            self._kinds_seen.add(kind)
            mix = float(opp.mix) if kind == "mixture" else 0.0
            if kind in ("current", "mixture"):
                with self.bank.swapped("theta_t") if phase > 0 else nullcontext():
                    return self._generate(batch, k, mixture=mix, weights=kind)
            if kind == "half" and phase > 0:
                return self._generate(batch, k, weights=kind)
            if kind not in OPPONENT_KINDS or kind not in self.bank:
                raise ValueError(
                    f"{self.alg.name}: opponent kind {kind!r} has no sampler in phase {phase} (known: "
                    f"{list(OPPONENT_KINDS)}); an algorithm outside the registry must map its opponents to these kinds."
                )
            with self.bank.swapped(kind):
                return self._generate(batch, k, weights=kind)

        return sample

    def _collect(self, t: int, phase: int, prompts: list[str]) -> Feedback:
        fb = estimate(
            self.estimator, self.alg.neural_opponents(t, phase), prompts, self._sampler(prompts, phase), self.oracle,
            k=self.k, opponent_samples=self.config.opponent_samples, pairwise_rows=self.alg.pairwise,
            pairs=self.config.pairs,
        )
        self._local["queries_iter"] += int(fb.queries)
        return fb

