"""``NashTrainer``: online iterations of any registered algorithm on a causal language model.

The trainer is the loop of :mod:`nashalign.sampled` with a transformer in place of the softmax table and
holds no math.  A phase = collect feedback, then optimise::

    opponents = alg.neural_opponents(t, phase)        # kinds: current, mixture, previous, half, ema
    feedback  = estimate(estimator, opponents, prompts, sampler, oracle, k=...)
    inputs    = feedback_inputs(alg, feedback, log pi_t, log mu)   # the builder nashalign.sampled uses too
    for epoch in range(E):                             # minibatches of rows, through Accelerate
        loss = alg.loss(replace(inputs[rows], logp=log pi_theta(y|x))).loss

Opponent kinds map to samplers: ``current`` = the policy at the start of the phase; ``mixture`` = the
token-level geometric mixture ``pi^{1-w} mu^w``; ``previous`` / ``ema`` = parameters in the
:class:`~nashalign.llm.opponents.OpponentBank`, swapped in place; ``half`` = EGPO's half step: phase 0
trains ``theta_t`` into it, phase 1 samples the opponent from the live model, then loads ``theta_t`` (and its
optimizer state) back from the bank and trains again against the same anchor ``pi_t``.  ONPO plays ``half``
in phase 0 too: the bank keeps the last played policy across iterations (slot ``half``).

Other parameters an algorithm reads: ``theta_{t-1}`` (slot ``previous``) scores every response as
``LossInputs.logp_previous`` when ``alg.uses_previous`` (APO, MNPO); the prox centre ``pi_k`` (slot ``centre``,
stored when ``alg.recentres_at(t)``: MPO, COMAL, Nash-Prox) makes ``logp_ref = (1 - w) log pi_k + w log mu``
(``w = alg.centre_ref_weight()``).

Devices come from Accelerate (single CPU/GPU, DDP, FSDP, DeepSpeed through ``accelerate launch``); every
reported count and metric is global over processes.  Checkpoints (:mod:`nashalign.llm.checkpoint`) are
atomic and resume bit-identically.  Importing this module does not import Hydra.

Examples:
    >>> from nashalign.algorithms import get_algorithm
    >>> from nashalign.llm.trainer import NashTrainer, TrainerConfig
    >>> trainer = NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), oracle, prompts,
    ...                       TrainerConfig(iterations=20, output_dir="runs/nash_md"))  # doctest: +SKIP
    >>> history = trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nashalign.algorithms.base import Algorithm, LossInputs, feedback_inputs
from nashalign.estimators import Feedback
from nashalign.llm import _setup, checkpoint
from nashalign.llm._load import process_state
from nashalign.llm._report import TrainerReporting
from nashalign.llm._sampling import TrainerSampling
from nashalign.llm._slots import TrainerSlots
from nashalign.llm.checkpoint import latest_checkpoint
from nashalign.llm.config import TIMING_KEYS, TrainerConfig
from nashalign.llm.generation import make_sampler, sampler_hook
from nashalign.llm.opponents import OpponentBank
from nashalign.llm.runs import collect_runs, plot_curves, summary_table  # re-exported: the apps' run helpers

__all__ = ["TrainerConfig", "NashTrainer", "latest_checkpoint", "TIMING_KEYS", "collect_runs", "plot_curves",
           "summary_table"]

log = logging.getLogger(__name__)


def _rows(inputs: LossInputs, m: torch.Tensor) -> LossInputs:
    """The rows ``m`` of every ``(R, K)`` field (None stays None)."""
    keys = ("logp_anchor", "logp_ref", "signal", "logp_behavior", "weights", "logp_previous")
    return replace(inputs, **{k: getattr(inputs, k)[m] for k in keys if getattr(inputs, k) is not None})


class NashTrainer(TrainerSampling, TrainerSlots, TrainerReporting):
    """Online Nash learning for a :class:`~nashalign.llm.policy.CausalLMPolicy` (see the module docstring).

    Args:
        policy: the policy to train; its reference ``mu`` is frozen before the first step.
        algorithm: any registered :class:`~nashalign.algorithms.Algorithm` (or your own subclass).
        oracle: ``oracle(prompts, first, second) -> (B,)`` probabilities (any :mod:`nashalign.oracles` oracle).
        prompts: the prompt strings.
        config: a :class:`TrainerConfig` (or a mapping of its fields).
        evaluate: optional ``evaluate(policy) -> {name: float}`` called before training, every
            ``config.eval_every`` iterations and at the end.
        sampler: the generation backend, ``sampler(policy, prompts, k, *, weights, **settings) -> Samples``
            (default: the one ``config.generation`` names, :mod:`nashalign.llm.generation`).

    Attributes:
        history: one metrics dict per iteration (``iteration`` 0 holds the evaluation before training).
        iteration: completed iterations.
        queries / eval_queries: oracle queries on training feedback / on the win-rate tracking, over all processes.
        bank: the :class:`~nashalign.llm.opponents.OpponentBank` of parameter copies.
    """

    def __init__(
        self,
        policy: Any,
        algorithm: Algorithm,
        oracle: Callable[..., Any],
        prompts: Sequence[str],
        config: TrainerConfig | Mapping[str, Any] | None = None,
        *,
        evaluate: Callable[[Any], Mapping[str, float]] | None = None,
        sampler: Callable[..., Any] | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = cfg = config if isinstance(config, TrainerConfig) else TrainerConfig.from_mapping(config or {})
        _setup.check_inputs(cfg, policy, algorithm, oracle, prompts)
        self.policy, self.alg, self.oracle, self.prompts = policy, algorithm, oracle, list(prompts)
        if cfg.missing_eos_penalty:  # truncated responses lose (texts are tagged in _generate)
            from nashalign.llm.evaluate import missing_eos_penalized

            self.oracle = missing_eos_penalized(oracle, cfg.missing_eos_penalty)
        self.evaluate_fn = evaluate
        self.estimator = cfg.estimator or algorithm.estimator
        self.k = cfg.k if cfg.k is not None else (4 if self.estimator == "winrate" else 2)
        _setup.check_estimator(cfg, algorithm, self.estimator)
        self.output_dir = Path(cfg.output_dir)
        state = process_state(cpu=cfg.cpu)
        checkpoint.prepare_output_dir(
            self.output_dir, resume=cfg.resume, overwrite=cfg.overwrite_output_dir, state=state
        )
        _setup.allow_precision_change(cfg)
        self.accelerator = acc = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            cpu=cfg.cpu,
            log_with=_setup.available_trackers(cfg),
            project_dir=str(self.output_dir),
        )
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        set_seed(cfg.seed, device_specific=True)
        if getattr(policy.model, "hf_device_map", None) is None and str(policy.device) != str(acc.device):
            policy.model.to(acc.device)
        _setup.prepare_precision(policy, cfg)
        _setup.prepare_reference(policy, acc, cfg)
        if cfg.gradient_checkpointing:
            _setup.enable_gradient_checkpointing(policy)
        params = policy.parameters_to_train()
        policy.model.zero_grad(set_to_none=True)  # a gradient left by whoever built the model must not leak in
        self.optimizer = _setup.build_optimizer(params, cfg)
        self.total_steps = cfg.iterations * algorithm.phases * cfg.epochs * self.steps_per_epoch()
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.warmup_steps,
            num_training_steps=max(self.total_steps, 1),
        )
        self.model, self.optimizer = acc.prepare(policy.model, self.optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.generator = torch.Generator(device=acc.device).manual_seed(cfg.seed * 1000 + acc.process_index)
        self.shuffle_generator = torch.Generator().manual_seed(cfg.seed * 1000 + 7 + acc.process_index)
        self.sampler = make_sampler(  # [generation hook] the given one, the HF loop, or a vLLM engine kept in sync
            cfg.generation, policy, cfg.vllm, max_new_tokens=cfg.max_new_tokens, process_index=acc.process_index,
            num_processes=acc.num_processes, given=sampler,
        )
        self.bank = OpponentBank(policy.model, offload=cfg.opponent_offload)
        self.iteration = self.queries = self.eval_queries = 0
        self._local = {"queries_iter": 0, "eval_queries_iter": 0}
        self.history: list[dict[str, Any]] = []
        self._kinds_seen: set[str] = set()
        self._gen_stats: dict[str, Any] = {}
        self._trackers_started = False
        if cfg.resume:
            path = latest_checkpoint(self.output_dir) if cfg.resume is True else Path(cfg.resume)
            if path is not None:
                self.load_checkpoint(path)
            elif acc.is_main_process:
                log.info("resume=True but no checkpoint in %s: starting fresh.", self.output_dir / "checkpoints")

    def rows_per_phase(self) -> int:
        """Loss rows one phase produces per process (pairs for pairwise forms, groups of ``k`` otherwise)."""
        B, k = self.config.prompts_per_iteration, self.k
        if self.estimator == "pair" or not self.alg.pairwise:
            return B
        if self.estimator == "winrate" and self.config.pairs == "best_worst":
            return B
        return B * k * (k - 1) // 2

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of one phase."""
        return math.ceil(self.rows_per_phase() / self.config.minibatch_size)

    # ------------------------------------------------------------------------------------- log-probs
    def _logprobs(self, samples: Any, *, model: Any = None, grad: bool = False) -> torch.Tensor:
        with self.accelerator.autocast() if model == "reference" else nullcontext():
            return self.policy.sequence_logprobs(
                samples, model=model, normalize=self.config.normalize_logprobs, grad=grad,
                batch_size=None if grad else self.config.logprob_batch_size,
            )

    def _train_module(self) -> Any:
        return None if self.model is self.policy.model else self.model

    @property
    def _dropout_free(self) -> bool:
        return _setup.dropout_free(self.accelerator.unwrap_model(self.model))

    # ------------------------------------------------------------------------------------- one phase
    def optimise(self, fb: Feedback, *, t: int | None = None, weights: torch.Tensor | None = None) -> dict[str, Any]:
        """The optimisation half of a phase on given feedback: minibatch steps on ``alg.loss`` over its rows.

        ``weights`` ``(R,)``: exact row weights (every response enumerated with its probability) instead of
        sampled rows; what the trainer-phase exactness test feeds.  Metrics are read from the device once.
        """
        return self._optimise(self.iteration if t is None else t, fb, weights, self._previous_logprobs(fb))

    def _optimise(
        self, t: int, fb: Feedback, weights: torch.Tensor | None = None, previous: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Minibatch steps on ``alg.loss`` over the phase's rows; metrics read from the device once, at the end.

        ``previous``: ``(N,)`` ``log pi_{t-1}`` per response (``alg.uses_previous``).
        """
        cfg, acc, alg = self.config, self.accelerator, self.alg
        sampler_hook(self.sampler, "release")  # [generation hook] sampling is over until the next phase
        index = fb.index.cpu()  # (R, K) into fb.responses
        R, mb = index.shape[0], cfg.minibatch_size
        ref_all = self._reference_logprobs(fb.responses)  # (N,) log mu (or the prox centre), each response once
        dev = ref_all.device
        # One optimizer step per phase and no dropout: log pi_t is the gradient pass's own (detached) value.
        reuse_anchor = cfg.epochs == 1 and R <= mb and self._dropout_free
        anchor_all = None if reuse_anchor else self._logprobs(fb.responses, model=self._train_module())
        inputs = feedback_inputs(alg, fb, anchor_all, ref_all, step=t, weights=weights, logp_previous=previous)
        sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=dev)
        grad_norm, n_terms, n_steps = torch.zeros((), device=dev), 0, 0
        self.model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(R, generator=self.shuffle_generator)
            for start in range(0, R, mb):
                for micro in torch.tensor_split(order[start : start + mb], cfg.gradient_accumulation_steps):
                    with acc.accumulate(self.model):
                        if micro.numel() > 0:
                            uniq, inverse = torch.unique(index[micro], return_inverse=True)  # (u,), (b, K)
                            logp_u = self._logprobs(fb.responses.select(uniq), model=self._train_module(), grad=True)
                            logp = logp_u[inverse.to(dev)]  # (b, K)
                            rows = _rows(inputs, micro.to(dev))
                            if rows.logp_anchor is None:
                                a = logp.detach()
                                rows = replace(rows, logp_anchor=a, logp_behavior=a if fb.behavior == "current" else None)
                            out = alg.loss(replace(rows, logp=logp))
                            finite &= torch.isfinite(out.loss.detach())
                            acc.backward(out.loss)
                            for name, v in out.terms.items():
                                sums[name] = sums.get(name, 0.0) + v.detach().float().mean()
                            n_terms += 1
                        if acc.sync_gradients:
                            if cfg.max_grad_norm is not None:
                                gn = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                                if gn is not None:
                                    grad_norm, n_steps = grad_norm + gn.detach().float(), n_steps + 1
                            self.optimizer.step()
                            if not acc.optimizer_step_was_skipped:
                                self.scheduler.step()
                            self.optimizer.zero_grad(set_to_none=True)
        sampler_hook(self.sampler, "weights_changed")  # [generation hook] pi_theta moved
        names = list(sums)
        host = torch.stack([sums[n] / max(n_terms, 1) for n in names] + [grad_norm / max(n_steps, 1),
                           inputs.signal.float().mean(), finite.float()]).tolist()  # the phase's one sync
        if host[-1] < 1:
            raise FloatingPointError(
                f"{alg.name}: non-finite loss at iteration {t} (terms {dict(zip(names, host))}); lower "
                "trainer.learning_rate or the algorithm's eta, or raise tau."
            )
        metrics: dict[str, Any] = dict(zip(names, host))
        metrics.update(signal_mean=host[-2], rows=R)
        if n_steps:
            metrics["grad_norm"] = host[-3]
        return metrics

    # ------------------------------------------------------------------------------------- one iteration
    def step(self) -> dict[str, Any]:
        """One iteration (all phases): returns its (global) metrics and appends them to :attr:`history`."""
        alg, t, bank = self.alg, self.iteration, self.bank
        kinds = {o.kind for p in range(alg.phases) for o in alg.neural_opponents(t, p)}
        self._gen_stats, self._local = {}, {"queries_iter": 0, "eval_queries_iter": 0}
        start = time.perf_counter()
        keep_previous = "previous" in kinds or alg.uses_previous  # OMWU's opponent; APO's / MNPO's anchor
        keep_half = any(o.kind == "half" for o in alg.neural_opponents(t, 0))  # ONPO: phase 0 plays the last half
        for kind, keep in (("previous", keep_previous), ("ema", "ema" in kinds), ("half", keep_half)):
            if keep and kind not in bank:
                bank.store(kind)  # pi_{-1} := pi_0, theta_bar_0 := theta_0, ONPO's pi_0 := pi_hat_0 (tabular init)
        recentres = getattr(alg, "recentres_at", None)
        if recentres is not None and recentres(t):
            bank.store("centre")  # the prox centre becomes pi_t (MPO's magnet reset)
        phase_metrics, anchor = [], None
        for phase in range(alg.phases):
            prompts = self._prompt_batch(t, phase)
            fb = self._collect(t, phase, prompts)
            if phase == 0:
                anchor = (prompts, fb.responses) if fb.behavior == "current" else None
                if alg.phases > 1:
                    self._store_theta_t(keep_half)
            else:  # extragradient: back to theta_t (and its optimizer state), train against the half step
                self._restore_theta_t(keep_half)
            previous = self._previous_logprobs(fb)  # log pi_{t-1} (uses_previous), before the slot moves on
            if phase == alg.phases - 1 and keep_previous:
                bank.store("previous")  # the live model is theta_t: the next iteration's previous iterate
            phase_metrics.append(self._optimise(t, fb, previous=previous))
        bank.drop("theta_t")
        if "ema" in kinds:
            beta = next(o.mix for p in range(alg.phases) for o in alg.neural_opponents(t, p) if o.kind == "ema")
            bank.ema_update("ema", beta)
        sampler_hook(self.sampler, "weights_changed")  # [generation hook] the previous iterate / the EMA moved
        self.iteration = t + 1
        metrics = self._iteration_metrics(t, phase_metrics, anchor, start)
        self.history.append(metrics)
        return metrics

    # ------------------------------------------------------------------------------------- the loop
    def train(self, *, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Run until ``config.iterations`` (or, to simulate an interruption, ``stop_after`` iterations).

        Returns:
            :attr:`history`: one metrics dict per iteration (plus the ``iteration`` 0 evaluation).
        """
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        end = cfg.iterations if stop_after is None else min(int(stop_after), cfg.iterations)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if acc.trackers is not None and acc.log_with and not self._trackers_started:
            acc.init_trackers(cfg.project_name, config=_setup.tracker_config(cfg, self.alg))
            self._trackers_started = True
        if self.iteration == 0 and not self.history:
            row: dict[str, Any] = {"iteration": 0, "queries": 0}
            row.update(self._evaluate())
            self.history.append(row)
            self._log(row)
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc=self.alg.name,
                   disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True)
        try:
            while self.iteration < end:
                metrics = self.step()
                self._log(metrics)
                post = {"loss": f"{metrics.get('loss', float('nan')):.4g}"}
                for key in ("win_rate_vs_anchor", "exploitability", "kl_target"):
                    if key in metrics:
                        post[key[:7]] = f"{metrics[key]:.3g}"
                bar.set_postfix(post)
                bar.update(1)
                if cfg.save_every and self.iteration % cfg.save_every == 0 and self.iteration < cfg.iterations:
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.iteration >= cfg.iterations and end == cfg.iterations:
            self.save_checkpoint()
            if cfg.save_final_model and acc.is_main_process:
                self.policy.save_pretrained(str(self.output_dir / "final"), merge_lora=cfg.merge_lora)
            if self._trackers_started:
                acc.end_training()
        return self.history

    # ------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Atomically save model, optimizer, scheduler, RNGs, the opponent bank and the trainer state."""
        return checkpoint.save_checkpoint(self, path)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore everything :meth:`save_checkpoint` saved; training continues at the saved iteration."""
        checkpoint.load_checkpoint(self, path)
        sampler_hook(self.sampler, "weights_changed")  # [generation hook] parameters and bank restored
