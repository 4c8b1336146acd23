"""``NashTrainer``: online iterations of any registered algorithm on a causal language model.

The trainer is the loop of :mod:`nashalign.sampled` with a transformer in place of the softmax table.
It holds no math: whom to play against comes from ``alg.neural_opponents``, what to ask the oracle from
:func:`nashalign.estimators.estimate`, and the objective from ``alg.loss``.  Per iteration ``t`` and
phase::

    opponents = alg.neural_opponents(t, phase)        # kinds: current, mixture, previous, half, ema
    feedback  = estimate(estimator, opponents, prompts, sampler, oracle, k=...)
    anchor    = log pi_t(y|x), ref = log mu(y|x)       # once per phase, no grad, float32 (the anchor is
                                                       # read off the gradient pass when a phase takes
                                                       # one optimizer step and the model has no dropout)
    for epoch in range(E):                             # minibatches of rows, through Accelerate
        loss = alg.loss(LossInputs(logp=log pi_theta(y|x), anchor, ref, signal, ...)).loss

and the model after the last phase is ``pi_{t+1}``, the next anchor.  Opponent kinds map to samplers:
``current`` = the policy at the start of the phase; ``mixture`` = the token-level geometric mixture
``pi^{1-w} mu^w`` (``w = opponent.mix``); ``previous`` = the parameters of iteration ``t - 1`` (OMWU; also kept, and every response scored under
it as ``LossInputs.logp_previous``, for algorithms with ``uses_previous``: APO, MNPO);
``half`` = the extragradient half step (EGPO: phase 0 trains ``theta_t`` into the half step, phase 1
samples the opponent from it, restores ``theta_t`` (and the optimizer state) and trains again against
the same anchor ``pi_t``); ``ema`` = parameters averaged with rate ``opponent.mix`` (Nash-EMA).

Devices and scale come from `Accelerate <https://huggingface.co/docs/accelerate>`_ only: single CPU or
GPU, DDP, FSDP or DeepSpeed through ``accelerate launch --config_file ...``; mixed precision, gradient
accumulation and clipping, LR schedules (``transformers.get_scheduler``), seeds.  Checkpoints
(``accelerator.save_state`` + ``trainer_state.json``) restore model, optimizer, scheduler, every RNG
and the iteration, so a resumed run ends bit-identical to an uninterrupted one on the same machine.

Examples:
    >>> from nashalign.algorithms import get_algorithm
    >>> from nashalign.llm.trainer import NashTrainer, TrainerConfig
    >>> trainer = NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), oracle, prompts,
    ...                       TrainerConfig(iterations=20, output_dir="runs/nash_md"))  # doctest: +SKIP
    >>> history = trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback

from nashalign.algorithms import _losses
from nashalign.algorithms.base import OPPONENT_KINDS, Algorithm, LossInputs, Opponent
from nashalign.estimators import ESTIMATORS, Feedback, estimate

__all__ = [
    "TrainerConfig",
    "NashTrainer",
    "BenchmarkSummary",
    "build_scratch_policy",
    "collect_runs",
    "plot_curves",
    "latest_checkpoint",
]

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)
MIXED_PRECISION = ("no", "fp16", "bf16")
TRACKERS = ("tensorboard", "wandb")
STATE_FILE = "trainer_state.json"
EXTRA_FILE = "opponent_state.pt"
#: Metrics that depend on wall-clock time or the machine (excluded from reproducibility checks).
TIMING_KEYS = ("time_s", "samples_per_s", "tokens_per_s", "peak_memory_mb", "generation_s", "train_s")


# =============================================================================================== config
@dataclass
class TrainerConfig:
    """Settings of :class:`NashTrainer` (validated in ``__post_init__``; bad values raise ``ValueError``).

    Iterations and sampling:
        iterations (`int`, defaults to 10): outer iterations ``t`` (each moves the anchor once).
        prompts_per_iteration (`int`, defaults to 8): prompts drawn per phase (per process under DDP),
            cycling through the prompt set in a seeded order.
        k (`int`, *optional*): responses per prompt for the loss; default 2 (4 for the ``winrate`` estimator);
            the ``pair`` estimator always draws one pair per prompt.
        estimator (`str`, *optional*): ``"pair"``, ``"opponent"`` or ``"winrate"``; default the algorithm's.
        opponent_samples (`int`, defaults to 1): opponent samples per response (``opponent``/``winrate``).
        pairs (`str`, defaults to ``"all"``): ``"all"`` pairs of the ``k`` responses or ``"best_worst"``
            (SPPO's / DNO-Prct's heuristic; ``winrate`` only).
        max_new_tokens, temperature, top_p, top_k: generation settings (every sampler uses them).
        normalize_logprobs (`bool`, defaults to False): divide sequence log-probs by the response length
            (EGPO's ``normalize_logprobs``; SPEC.md section 11 note 4).  The tabular theory is for sums.

    Optimisation:
        epochs (`int`, defaults to 1): passes over each phase's rows.
        minibatch_size (`int`, defaults to 8): rows (pairs or groups of ``k``) per optimizer step (per process).
        gradient_accumulation_steps (`int`, defaults to 1): each minibatch is split into this many
            micro-batches whose gradients are accumulated (Accelerate's ``accumulate``).
        optimizer (`str`, defaults to ``"adamw"``), learning_rate, weight_decay, adam_betas, adam_eps.
        lr_scheduler (`str`, defaults to ``"constant"``): a ``transformers.get_scheduler`` name; with
            ``warmup_steps`` (optimizer steps).
        max_grad_norm (`float`, *optional*, defaults to 1.0): clip the global gradient norm (None: no clipping).
        mixed_precision (`str`, defaults to ``"no"``): ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate autocast;
            log-probs are always float32).
        extragradient_restore_optimizer (`bool`, defaults to True): EGPO's phase 1 restores the optimizer
            state of ``theta_t`` along with the parameters (as the paper's code does).
        seed (`int`, defaults to 0): seeds torch/numpy/random (via Accelerate) and the sampling generator.
        logprob_batch_size, generation_batch_size (`int`, *optional*): rows per forward (memory bound).
        cpu (`bool`, defaults to False): force the CPU even when a GPU is present.
        num_threads (`int`, *optional*): ``torch.set_num_threads`` (tiny models on a busy CPU run fastest with 1).
        lora (`dict`, *optional*): ``peft.LoraConfig`` kwargs the app uses to build the policy; the trainer
            only checks that the policy it gets is a PEFT model when this is set.

    Evaluation, logging, checkpoints:
        eval_every (`int`, defaults to 1): call the ``evaluate`` callback every this many iterations (0: only
            before and after training).
        eval_prompts (`list[str]`, *optional*): held-out prompts; on the ``eval_every`` schedule the policy is
            compared with its reference there (``eval/win_rate``, ``eval/lc_win_rate``, with intervals; see
            :func:`nashalign.llm.evaluate.heldout_metrics`), ``eval_samples`` samples per prompt.
        eval_oracle (*optional*): the held-out evaluation's oracle (a callable, or a dotted import path); default
            the training oracle.  Not part of checkpoints or tracker configs.
        missing_eos_penalty (`float`, *optional*): ``lambda`` in ``[0, 1]``; responses cut off at
            ``max_new_tokens`` lose (``P' = clip(P - lambda (c_a - c_b), 0, 1)``, ``c = 1`` if truncated), in the
            training feedback and the held-out evaluation.
        track_win_rate (`bool`, defaults to True): each iteration, one fresh sample per prompt from
            ``pi_{t+1}`` against one anchor sample from ``pi_t`` under the oracle (``B`` extra generations and
            queries, counted as ``eval_queries``, not ``queries``).
        output_dir (`str`, defaults to ``"outputs/llm"``): ``metrics.jsonl``, ``checkpoints/``, ``final/``.
        save_every (`int`, defaults to 0): checkpoint every this many iterations (0: only at the end).
        save_total_limit (`int`, *optional*): keep only the newest checkpoints.
        save_final_model (`bool`, defaults to True): ``policy.save_pretrained(output_dir/final)`` at the end.
        resume (`bool | str`, defaults to False): True resumes from the newest checkpoint in
            ``output_dir/checkpoints`` (starting fresh when there is none); a path resumes from that one.
        log_with (`str | list[str]`, *optional*): Accelerate trackers (``"tensorboard"``, ``"wandb"``), used only
            when installed (a warning otherwise).  ``metrics.jsonl`` is always written.
        project_name (`str`, defaults to ``"nashalign"``): tracker project name.
        progress (`bool`, defaults to True): a tqdm bar with the live loss and win rate.
    """

    iterations: int = 10
    prompts_per_iteration: int = 8
    k: int | None = None
    estimator: str | None = None
    opponent_samples: int = 1
    pairs: str = "all"
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    normalize_logprobs: bool = False
    epochs: int = 1
    minibatch_size: int = 8
    gradient_accumulation_steps: int = 1
    optimizer: str = "adamw"
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    extragradient_restore_optimizer: bool = True
    seed: int = 0
    logprob_batch_size: int | None = None
    generation_batch_size: int | None = None
    cpu: bool = False
    num_threads: int | None = None
    lora: dict[str, Any] | None = None
    eval_every: int = 1
    # --- issue 17 hook (held-out evaluation, missing-EOS penalty): logic in nashalign/llm/evaluate.py
    eval_prompts: list[str] | None = None
    eval_oracle: Any = None
    eval_samples: int = 2
    missing_eos_penalty: float | None = None
    # --- end of issue 17 hook
    track_win_rate: bool = True
    output_dir: str = "outputs/llm"
    save_every: int = 0
    save_total_limit: int | None = None
    save_final_model: bool = True
    resume: bool | str = False
    log_with: str | list[str] | None = None
    project_name: str = "nashalign"
    progress: bool = True

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
                bound = ">= 0" if allow_zero else ">= 1"
                raise ValueError(f"trainer.{name} must be an integer {bound}, got {v!r}.")

        for name in ("iterations", "prompts_per_iteration", "opponent_samples", "max_new_tokens", "epochs"):
            positive_int(name)
        for name in ("minibatch_size", "gradient_accumulation_steps"):
            positive_int(name)
        for name in ("top_k", "warmup_steps", "seed", "eval_every", "save_every"):
            positive_int(name, allow_zero=True)
        self._check_eval()  # issue 17 hook
        for name in ("logprob_batch_size", "generation_batch_size", "save_total_limit", "num_threads"):
            if getattr(self, name) is not None:
                positive_int(name)
        if self.k is not None:
            positive_int("k")
            if self.k < 2:
                raise ValueError(f"trainer.k must be >= 2 (the estimators compare responses), got {self.k}.")
        if self.estimator is not None and self.estimator not in ESTIMATORS:
            raise ValueError(
                f"trainer.estimator must be one of {list(ESTIMATORS)} or null (the algorithm's own), got "
                f"{self.estimator!r}."
            )
        if self.pairs not in ("all", "best_worst"):
            raise ValueError(f"trainer.pairs must be 'all' or 'best_worst', got {self.pairs!r}.")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"trainer.temperature must be > 0, got {self.temperature!r}.")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"trainer.top_p must be in (0, 1], got {self.top_p!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"trainer.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}.")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"trainer.learning_rate must be a number > 0, got {self.learning_rate!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"trainer.weight_decay must be >= 0, got {self.weight_decay!r}.")
        betas = tuple(float(b) for b in self.adam_betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"trainer.adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}.")
        self.adam_betas = betas  # type: ignore[assignment]
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"trainer.lr_scheduler must be one of {list(SCHEDULERS)}, got {self.lr_scheduler!r}.")
        if self.max_grad_norm is not None and not (
            isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0
        ):
            raise ValueError(f"trainer.max_grad_norm must be > 0 or null (no clipping), got {self.max_grad_norm!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"trainer.mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}; "
                "use 'bf16' on recent GPUs, 'no' on CPU."
            )
        if self.gradient_accumulation_steps > self.minibatch_size:
            raise ValueError(
                f"trainer.gradient_accumulation_steps ({self.gradient_accumulation_steps}) cannot exceed "
                f"trainer.minibatch_size ({self.minibatch_size}): each minibatch is split into that many micro-batches."
            )
        if not isinstance(self.resume, (bool, str)):
            raise ValueError(f"trainer.resume must be true/false or a checkpoint path, got {self.resume!r}.")
        if self.lora is not None and not isinstance(self.lora, Mapping):
            raise ValueError(f"trainer.lora must be a mapping of peft.LoraConfig kwargs or null, got {self.lora!r}.")
        if self.lora is not None:
            self.lora = dict(self.lora)
        names = [self.log_with] if isinstance(self.log_with, str) else list(self.log_with or [])
        bad = [n for n in names if n not in TRACKERS]
        if bad:
            raise ValueError(f"trainer.log_with: unknown tracker(s) {bad}; choose from {list(TRACKERS)} (or null).")
        self.log_with = names

    def _check_eval(self) -> None:
        """Issue 17 hook: validate the held-out evaluation and the missing-EOS penalty."""
        from nashalign.llm.evaluate import _check_penalty

        _check_penalty(self.missing_eos_penalty)
        if self.eval_prompts is not None:
            if isinstance(self.eval_prompts, str) or not all(isinstance(p, str) for p in self.eval_prompts):
                raise ValueError("trainer.eval_prompts must be a list of prompt strings (or null: no held-out eval).")
            self.eval_prompts = list(self.eval_prompts)
            if not self.eval_prompts:
                raise ValueError("trainer.eval_prompts is empty; give held-out prompts or null.")
        if self.eval_oracle is not None and not (callable(self.eval_oracle) or isinstance(self.eval_oracle, str)):
            raise ValueError(
                f"trainer.eval_oracle must be an oracle or a dotted import path, got {self.eval_oracle!r}."
            )
        if isinstance(self.eval_samples, bool) or not isinstance(self.eval_samples, int) or self.eval_samples < 1:
            raise ValueError(f"trainer.eval_samples must be an integer >= 1, got {self.eval_samples!r}.")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainerConfig:
        """Build from a dict / OmegaConf node; unknown keys raise a ``ValueError`` naming the known ones."""
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(values, DictConfig):
                values = OmegaConf.to_container(values, resolve=True)  # type: ignore[assignment]
        except ImportError:  # pragma: no cover
            pass
        values = dict(values)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown trainer setting(s) {unknown}; known settings: {known}.")
        if isinstance(values.get("adam_betas"), list):
            values["adam_betas"] = tuple(values["adam_betas"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, eval_oracle=None))  # issue 17 hook: an oracle object is not a setting
        if self.eval_oracle is not None:
            from nashalign.oracles.base import oracle_name

            d["eval_oracle"] = self.eval_oracle if isinstance(self.eval_oracle, str) else oracle_name(self.eval_oracle)
        d["adam_betas"] = list(self.adam_betas)
        return d


# =============================================================================================== helpers
def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint (one holding ``trainer_state.json``) under ``output_dir/checkpoints``."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if re.fullmatch(r"iter-\d+", p.name) and (p / STATE_FILE).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def _encode_rng(state: torch.Tensor) -> str:
    return base64.b64encode(bytes(state.cpu().to(torch.uint8).tolist())).decode("ascii")


def _decode_rng(text: str) -> torch.Tensor:
    return torch.tensor(list(base64.b64decode(text)), dtype=torch.uint8)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except (ImportError, OSError):  # pragma: no cover
        return float("nan")


def _scalar(x: Any) -> float:
    return float(x.detach().float().mean()) if isinstance(x, torch.Tensor) else float(x)


# =============================================================================================== trainer
class NashTrainer:
    """Online Nash learning for a :class:`~nashalign.llm.policy.CausalLMPolicy` (see the module docstring).

    Args:
        policy: the policy to train; its reference ``mu`` is frozen before the first step.
        algorithm: any registered :class:`~nashalign.algorithms.Algorithm` (or your own subclass).
        oracle: ``oracle(prompts, first, second) -> (B,)`` probabilities (any :mod:`nashalign.oracles` oracle).
        prompts: the prompt strings.
        config: a :class:`TrainerConfig` (or a mapping of its fields).
        evaluate: optional ``evaluate(policy) -> {name: float}`` called before training, every
            ``config.eval_every`` iterations and at the end (e.g. the synthetic benchmark's exact exploitability).

    Attributes:
        history: one metrics dict per iteration (``iteration`` 0 holds the evaluation before training).
        iteration: completed iterations.
        queries: oracle queries spent on training feedback.
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
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config if isinstance(config, TrainerConfig) else TrainerConfig.from_mapping(config or {})
        cfg = self.config
        if not isinstance(algorithm, Algorithm):
            raise TypeError(
                f"algorithm must be a nashalign Algorithm (e.g. get_algorithm('nash_md', eta=0.5, tau=0.1)), "
                f"got {type(algorithm).__name__}."
            )
        if not callable(oracle):
            raise TypeError(f"oracle must be callable oracle(prompts, first, second), got {type(oracle).__name__}.")
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, got one string; wrap it in a list.")
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings (see nashalign.llm.data.load_prompts).")
        if cfg.lora is not None and not getattr(policy, "is_peft", False):
            raise ValueError(
                "trainer.lora is set but the policy has no LoRA adapter; build it with "
                "CausalLMPolicy.from_pretrained(..., lora=config.lora) (the llm app does this)."
            )
        self.policy = policy
        self.alg = algorithm
        self.oracle = oracle
        if cfg.missing_eos_penalty:  # issue 17 hook: truncated responses lose (texts are tagged in _generate)
            from nashalign.llm.evaluate import missing_eos_penalized

            self.oracle = missing_eos_penalized(oracle, cfg.missing_eos_penalty)
        self.prompts = prompts
        self.evaluate_fn = evaluate
        self.estimator = cfg.estimator or algorithm.estimator
        self.form = getattr(algorithm, "form", None) or "regression"
        self.pairwise = self.form in _losses.PAIR_FORMS
        self.k = cfg.k if cfg.k is not None else (4 if self.estimator == "winrate" else 2)
        if cfg.pairs == "best_worst" and self.estimator != "winrate":
            raise ValueError("trainer.pairs='best_worst' needs the 'winrate' estimator (it ranks k responses).")
        if self.form == "pg" and self.estimator == "pair":
            for phase in range(algorithm.phases):
                if any(o.kind != "current" for o in algorithm.neural_opponents(0, phase)):
                    raise ValueError(
                        f"{algorithm.name}: the policy-gradient form needs responses from pi_t, but the 'pair' "
                        "estimator draws them from the opponent; set trainer.estimator=opponent."
                    )
        self.output_dir = Path(cfg.output_dir)

        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            cpu=cfg.cpu,
            log_with=self._available_trackers(),
            project_dir=str(self.output_dir),
        )
        acc = self.accelerator
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        set_seed(cfg.seed, device_specific=True)
        if str(policy.device) != str(acc.device):
            policy.model.to(acc.device)
        params = policy.parameters_to_train()  # also freezes the reference copy (the initial weights)
        self.optimizer = self._build_optimizer(params)
        self.total_steps = cfg.iterations * algorithm.phases * cfg.epochs * self.steps_per_epoch()
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            cfg.lr_scheduler,
            self.optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_training_steps=max(self.total_steps, 1),
        )
        self.model, self.optimizer = acc.prepare(policy.model, self.optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.generator = torch.Generator(device=acc.device).manual_seed(cfg.seed * 1000 + acc.process_index)
        self.shuffle_generator = torch.Generator().manual_seed(cfg.seed * 1000 + 7 + acc.process_index)

        self.iteration = 0
        self.queries = 0
        self.eval_queries = 0
        self.history: list[dict[str, Any]] = []
        self._previous: dict[str, torch.Tensor] | None = None  # theta_{t-1} (OMWU)
        self._ema: dict[str, torch.Tensor] | None = None  # averaged parameters (Nash-EMA)
        self._half: dict[str, torch.Tensor] | None = None  # extragradient half step (EGPO); ONPO's played policy
        self._centre: dict[str, torch.Tensor] | None = None  # prox centre pi_k (MPO, COMAL, Nash-Prox); None = mu
        self._kinds_seen: set[str] = set()
        self._gen_stats = {"sequences": 0, "tokens": 0, "seconds": 0.0}
        self._trackers_started = False

        if cfg.resume:
            path = latest_checkpoint(self.output_dir) if cfg.resume is True else Path(cfg.resume)
            if path is not None:
                self.load_checkpoint(path)
            elif acc.is_main_process:
                log.info("resume=True but no checkpoint in %s: starting fresh.", self.output_dir / "checkpoints")

    # ------------------------------------------------------------------------------------- setup helpers
    def _available_trackers(self) -> list[str] | None:
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        ok = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
        names = []
        for name in self.config.log_with or []:
            if ok[name]():
                names.append(name)
            else:
                log.warning(
                    "trainer.log_with: %s is not installed; skipping it (metrics.jsonl is still written).", name
                )
        return names or None

    def _build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)

    def rows_per_phase(self) -> int:
        """Loss rows one phase produces per process (pairs for pairwise forms, groups of ``k`` otherwise)."""
        B, k = self.config.prompts_per_iteration, self.k
        if self.estimator == "pair":
            return B
        if not self.pairwise:
            return B
        if self.estimator == "winrate" and self.config.pairs == "best_worst":
            return B
        return B * k * (k - 1) // 2

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of one phase."""
        return math.ceil(self.rows_per_phase() / self.config.minibatch_size)

    # ------------------------------------------------------------------------------------- sampling
    def _prompt_batch(self, t: int, phase: int) -> list[str]:
        """The prompts of (iteration, phase): a seeded cycle through the prompt set (no RNG state needed)."""
        cfg, acc = self.config, self.accelerator
        n, B = len(self.prompts), cfg.prompts_per_iteration
        start = ((t * self.alg.phases + phase) * acc.num_processes + acc.process_index) * B
        out, perms = [], {}
        for j in range(start, start + B):
            rnd = j // n
            if rnd not in perms:
                g = torch.Generator().manual_seed(cfg.seed * 7919 + rnd)
                perms[rnd] = torch.randperm(n, generator=g).tolist()
            out.append(self.prompts[perms[rnd][j % n]])
        return out

    def _generate(self, prompts: list[str], k: int, *, mixture: float = 0.0) -> Any:
        cfg = self.config
        start = time.perf_counter()
        with self._gathered():
            samples = self.policy.generate(
                prompts,
                k,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=cfg.top_k,
                mixture=mixture,
                generator=self.generator,
                batch_size=cfg.generation_batch_size,
            )
        self._gen_stats["seconds"] += time.perf_counter() - start
        if cfg.missing_eos_penalty:  # issue 17 hook: responses carry their finished flag to the oracle
            from nashalign.llm.evaluate import tag_finished

            samples.texts = tag_finished(samples.texts, samples.finished)
        self._gen_stats["sequences"] += len(samples)
        self._gen_stats["tokens"] += int(samples.response_mask.sum())
        return samples

    def _gathered(self) -> Any:
        """Full parameters for generation: FSDP gathers its shards (``summon_full_params``); else a no-op."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.fsdp import FullyShardedDataParallel

            return FullyShardedDataParallel.summon_full_params(self.model, writeback=False)
        return nullcontext()

    def _sampler(self, prompts: list[str]) -> Callable[[Opponent | None, torch.Tensor, int], Any]:
        """The estimator's sampler: ``None``/``current`` = the live policy, else the opponent's policy."""

        def sample(opp: Opponent | None, prompt_index: torch.Tensor, k: int) -> Any:
            batch = [prompts[i] for i in prompt_index.tolist()]
            kind = "current" if opp is None else opp.kind
            self._kinds_seen.add(kind)
            if kind == "current":
                return self._generate(batch, k)
            if kind == "mixture":
                return self._generate(batch, k, mixture=float(opp.mix))
            snap = {"previous": self._previous, "half": self._half, "ema": self._ema}.get(kind)
            if kind not in OPPONENT_KINDS or snap is None:
                raise ValueError(
                    f"{self.alg.name}: opponent kind {kind!r} has no sampler here (known: {list(OPPONENT_KINDS)}); "
                    "an algorithm outside the registry must map its opponents to these kinds."
                )
            with self.policy.using(snap):
                return self._generate(batch, k)

        return sample

    # ------------------------------------------------------------------------------------- log-probs
    def _logprobs(self, samples: Any, *, model: Any = None, grad: bool = False) -> torch.Tensor:
        return self.policy.sequence_logprobs(
            samples,
            model=model,
            normalize=self.config.normalize_logprobs,
            grad=grad,
            batch_size=None if grad else self.config.logprob_batch_size,
        )

    def _train_module(self) -> Any:
        return None if self.model is self.policy.model else self.model

    @property
    def _dropout_free(self) -> bool:
        """True when training-mode forwards equal eval-mode ones: no dropout module or config rate above 0."""
        model = self.accelerator.unwrap_model(self.model)
        if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
            return False
        cfg = getattr(model, "config", None)
        rates = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
        return not any(
            ("dropout" in k or "pdrop" in k) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in rates.items()
        )

    def _reference_logprobs(self, responses: Any) -> torch.Tensor:
        """``logp_ref``: ``log mu``, or for a prox-point rule whose centre ``pi_k`` was reset (``alg.recentres_at``)
        ``(1 - w) log pi_k + w log mu`` with ``w = alg.centre_ref_weight()`` (``mu`` is not run when ``w = 0``)."""
        if self._centre is None:
            return self._logprobs(responses, model="reference")
        with self.policy.using(self._centre):
            centre = self._logprobs(responses, model=self._train_module())
        w = float(self.alg.centre_ref_weight())
        return centre if w == 0 else (1.0 - w) * centre + w * self._logprobs(responses, model="reference")

    # ------------------------------------------------------------------------------------- one phase
    def _phase(self, t: int, phase: int) -> dict[str, Any]:
        cfg, acc, alg = self.config, self.accelerator, self.alg
        opponents = alg.neural_opponents(t, phase)
        prompts = self._prompt_batch(t, phase)
        fb: Feedback = estimate(
            self.estimator,
            opponents,
            prompts,
            self._sampler(prompts),
            self.oracle,
            k=self.k,
            opponent_samples=cfg.opponent_samples,
            pairwise_rows=self.pairwise,
            pairs=cfg.pairs,
        )
        R, K = fb.index.shape
        mb, accum = cfg.minibatch_size, cfg.gradient_accumulation_steps
        # Each response is scored once, however many rows (pairs) it appears in.
        index = fb.index.cpu()  # (R, K) into fb.responses
        ref_all = self._reference_logprobs(fb.responses)  # (N,) log mu (or the prox centre)
        dev = ref_all.device
        ref = ref_all[index.to(dev)]
        # One optimizer step per phase (one epoch, one minibatch) and no dropout: the parameters are theta_t
        # throughout the gradient pass, so log pi_t is that pass's own value (detached) and the separate
        # no-grad anchor pass is skipped (one forward over the N responses saved).
        reuse_anchor = cfg.epochs == 1 and R <= mb and self._dropout_free
        anchor = None
        if not reuse_anchor:
            anchor = self._logprobs(fb.responses, model=self._train_module())[index.to(dev)]  # (R, K) log pi_t
        if fb.behavior != "current" and self.form == "pg":
            raise ValueError(
                f"{alg.name}: the policy-gradient form needs responses from pi_t, but the responses come from "
                f"the '{fb.behavior}' opponent; use trainer.estimator=opponent."
            )
        signal = fb.signal.to(device=dev, dtype=torch.float32)
        self.queries += int(fb.queries)
        previous = None
        if alg.uses_previous:  # log pi_{t-1}(y) for anchors that use the previous iterate (APO, MNPO)
            with self.policy.using(self._previous):
                previous = self._logprobs(fb.responses, model=self._train_module())[index.to(dev)]

        terms: dict[str, list[float]] = {}
        grad_norms: list[float] = []
        self.model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(R, generator=self.shuffle_generator)
            for start in range(0, R, mb):
                batch_rows = order[start : start + mb]
                for micro in torch.tensor_split(batch_rows, accum):
                    with acc.accumulate(self.model):
                        if micro.numel() > 0:
                            uniq, inverse = torch.unique(index[micro], return_inverse=True)  # (u,), (b, K)
                            logp_u = self._logprobs(fb.responses.select(uniq), model=self._train_module(), grad=True)
                            m = micro.to(dev)
                            logp = logp_u[inverse.to(dev)]  # (b, K)
                            anchor_m = logp.detach() if anchor is None else anchor[m]
                            out = alg.loss(
                                LossInputs(
                                    logp=logp,
                                    logp_anchor=anchor_m,
                                    logp_ref=ref[m],
                                    signal=signal[m],
                                    weights=None,
                                    # responses sampled from pi_t: the behaviour policy is the anchor
                                    logp_behavior=anchor_m if fb.behavior == "current" else None,
                                    step=t,
                                    logp_previous=None if previous is None else previous[m],
                                )
                            )
                            if not torch.isfinite(out.loss):
                                raise FloatingPointError(
                                    f"{alg.name}: non-finite loss at iteration {t}, phase {phase} "
                                    f"(terms { ({k: _scalar(v) for k, v in out.terms.items()}) }); lower "
                                    "trainer.learning_rate or the algorithm's eta, or raise tau."
                                )
                            acc.backward(out.loss)
                            for name, v in out.terms.items():
                                terms.setdefault(name, []).append(_scalar(v))
                        if acc.sync_gradients:
                            if cfg.max_grad_norm is not None:
                                gn = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                                if gn is not None:
                                    grad_norms.append(_scalar(gn))
                            self.optimizer.step()
                            if not acc.optimizer_step_was_skipped:
                                self.scheduler.step()
                            self.optimizer.zero_grad(set_to_none=True)
        out_metrics: dict[str, Any] = {k: sum(v) / len(v) for k, v in terms.items()}
        out_metrics["signal_mean"] = float(signal.mean())
        out_metrics["rows"] = R
        if grad_norms:
            out_metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        out_metrics["_anchor_samples"] = fb.responses if fb.behavior == "current" else None
        out_metrics["_prompts"] = prompts
        return out_metrics

    # ------------------------------------------------------------------------------------- one iteration
    def step(self) -> dict[str, Any]:
        """One iteration (all phases): returns its metrics and appends them to :attr:`history`."""
        alg, t = self.alg, self.iteration
        kinds = {o.kind for p in range(alg.phases) for o in alg.neural_opponents(t, p)}
        self._gen_stats = {"sequences": 0, "tokens": 0, "seconds": 0.0}
        start = time.perf_counter()
        queries_before = self.queries
        keep_previous = "previous" in kinds or alg.uses_previous  # OMWU's opponent; APO's / MNPO's anchor
        theta_t = self.policy.snapshot() if (keep_previous or alg.phases > 1) else None
        opt_t = None
        if alg.phases > 1 and self.config.extragradient_restore_optimizer:
            opt_t = copy.deepcopy(self.optimizer.state_dict())
        if keep_previous and self._previous is None:
            self._previous = theta_t  # pi_{-1} := pi_0, as the tabular init
        if "ema" in kinds and self._ema is None:
            self._ema = self.policy.snapshot()  # theta_bar_0 = theta_0
        recentres = getattr(alg, "recentres_at", None)
        if recentres is not None and recentres(t):
            self._centre = self.policy.snapshot()  # the prox centre becomes pi_t (MPO's magnet reset)
        keep_half = any(o.kind == "half" for o in alg.neural_opponents(t, 0))  # ONPO: phase 0 plays the last half
        if keep_half and self._half is None:
            self._half = self.policy.snapshot()  # pi_0 = pi_hat_0
        phase_metrics = []
        for phase in range(alg.phases):
            if phase > 0:
                # Extragradient: the model now holds the half step; remember it, restore theta_t (and the
                # optimizer state), then train again from theta_t against the half-step opponent.
                self._half = self.policy.snapshot()
                self.policy.load_snapshot(theta_t)
                if opt_t is not None:
                    self.optimizer.load_state_dict(opt_t)
            phase_metrics.append(self._phase(t, phase))
        if not keep_half:
            self._half = None
        if keep_previous:
            self._previous = theta_t
        if "ema" in kinds:
            beta = next(o.mix for p in range(alg.phases) for o in alg.neural_opponents(t, p) if o.kind == "ema")
            self.policy.ema_update(self._ema, beta)
        train_s = time.perf_counter() - start
        gen = dict(self._gen_stats)

        last = phase_metrics[-1]
        metrics: dict[str, Any] = {"iteration": t + 1}
        for i, pm in enumerate(phase_metrics):
            prefix = "" if alg.phases == 1 else f"phase{i}/"
            metrics.update({f"{prefix}{k}": v for k, v in pm.items() if not k.startswith("_")})
        if alg.phases > 1:  # the iteration's loss is the final phase's
            metrics["loss"] = last.get("loss", float("nan"))
            metrics["signal_mean"] = last["signal_mean"]
        metrics["queries"] = self.queries
        metrics["queries_iter"] = self.queries - queries_before
        metrics["lr"] = float(self.scheduler.get_last_lr()[0])
        anchor_samples = phase_metrics[0]["_anchor_samples"]
        self.iteration = t + 1
        if self.config.track_win_rate and anchor_samples is not None:
            metrics["win_rate_vs_anchor"] = self._win_rate_vs_anchor(phase_metrics[0]["_prompts"], anchor_samples)
        metrics = self._reduce(metrics)
        metrics["eval_queries"] = self.eval_queries
        metrics["train_s"] = train_s
        metrics["generation_s"] = gen["seconds"]
        metrics["samples_per_s"] = gen["sequences"] / gen["seconds"] if gen["seconds"] > 0 else float("nan")
        metrics["tokens_per_s"] = gen["tokens"] / gen["seconds"] if gen["seconds"] > 0 else float("nan")
        metrics["peak_memory_mb"] = _peak_memory_mb(self.accelerator.device)
        ev = self.config.eval_every
        if (self.evaluate_fn is not None or self.config.eval_prompts) and (  # issue 17 hook: or held-out eval
            (ev and self.iteration % ev == 0) or self.iteration == self.config.iterations
        ):
            metrics.update(self._evaluate())
        metrics["time_s"] = time.perf_counter() - start
        self.history.append(metrics)
        return metrics

    def _win_rate_vs_anchor(self, prompts: list[str], anchor_samples: Any) -> float:
        """Mean ``P(y_new > y_anchor)``: one fresh sample of ``pi_{t+1}`` per prompt vs one of ``pi_t``."""
        idx = anchor_samples.prompt_index.cpu()
        first = torch.tensor([int((idx == i).nonzero()[0]) for i in range(len(prompts))])
        anchor = anchor_samples.select(first)
        fresh = self._generate(prompts, 1)
        p = torch.as_tensor(self.oracle(prompts, fresh, anchor)).float()
        self.eval_queries += len(prompts)
        return float(p.mean())

    def _evaluate(self) -> dict[str, float]:
        out = dict(self.evaluate_fn(self.policy)) if self.evaluate_fn is not None else {}
        if self.config.eval_prompts:  # issue 17 hook: held-out win rates against the reference
            out.update(self._heldout())
        return {str(k): float(v) for k, v in out.items()}

    def _heldout(self) -> dict[str, float]:
        """Issue 17 hook: :func:`nashalign.llm.evaluate.heldout_metrics` on ``config.eval_prompts``."""
        from nashalign.llm.evaluate import heldout_metrics
        from nashalign.oracles import as_oracle

        cfg = self.config
        oracle = self.oracle if cfg.eval_oracle is None else as_oracle(cfg.eval_oracle)
        if cfg.eval_oracle is None and cfg.missing_eos_penalty:
            oracle = oracle.inner  # heldout_metrics applies the penalty itself
        with self._gathered():
            out = heldout_metrics(
                self.policy,
                cfg.eval_prompts,
                oracle,
                k=cfg.eval_samples,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                seed=cfg.seed + 10_007 * self.iteration,
                missing_eos_penalty=cfg.missing_eos_penalty,
            )
        self.eval_queries += int(out["eval/queries"])
        return out

    def _reduce(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Average float metrics (sum the counters) over processes; a no-op on one process."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return metrics
        keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and k != "iteration"]
        vals = torch.tensor([float(metrics[k]) for k in keys], device=acc.device, dtype=torch.float64)
        summed = acc.reduce(vals, reduction="sum")
        out = dict(metrics)
        for k, v in zip(keys, summed.tolist()):
            out[k] = v if k.startswith("queries") else v / acc.num_processes
        return out

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
            acc.init_trackers(cfg.project_name, config=self._tracker_config())
            self._trackers_started = True
        if self.iteration == 0 and not self.history:
            row: dict[str, Any] = {"iteration": 0, "queries": 0}
            if self.evaluate_fn is not None or cfg.eval_prompts:  # issue 17 hook: or held-out eval
                row.update(self._evaluate())
            self.history.append(row)
            self._log(row)
        bar = tqdm(
            total=cfg.iterations,
            initial=self.iteration,
            desc=f"{self.alg.name}",
            disable=not (cfg.progress and acc.is_main_process),
            dynamic_ncols=True,
        )
        try:
            while self.iteration < end:
                metrics = self.step()
                self._log(metrics)
                post = {"loss": f"{metrics.get('loss', float('nan')):.4g}"}
                if "win_rate_vs_anchor" in metrics:
                    post["win"] = f"{metrics['win_rate_vs_anchor']:.3f}"
                for key in ("exploitability", "kl_target"):
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
                acc.unwrap_model(self.model)  # the policy's model is the unwrapped module
                self.policy.save_pretrained(str(self.output_dir / "final"))
            if self._trackers_started:
                acc.end_training()
        return self.history

    def _tracker_config(self) -> dict[str, Any]:
        cfg = {f"trainer/{k}": v for k, v in self.config.to_dict().items() if isinstance(v, (int, float, str, bool))}
        cfg.update({f"algorithm/{k}": v for k, v in self.alg.hyperparameters().items() if v is not None})
        cfg["algorithm/name"] = self.alg.name
        return cfg

    def _log(self, metrics: Mapping[str, Any]) -> None:
        acc = self.accelerator
        if not acc.is_main_process:
            return
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"algorithm": self.alg.name, **metrics}) + "\n")
        if self._trackers_started:
            acc.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=int(metrics["iteration"]))

    # ------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save model, optimizer, scheduler and RNG (``accelerator.save_state``) plus the trainer state."""
        acc = self.accelerator
        path = Path(path) if path is not None else self.output_dir / "checkpoints" / f"iter-{self.iteration:06d}"
        acc.save_state(str(path))
        if acc.is_main_process:
            extra = {"previous": self._previous, "ema": self._ema, "centre": self._centre, "half": self._half}
            torch.save({k: v for k, v in extra.items() if v is not None}, path / EXTRA_FILE)
            state = {
                "iteration": self.iteration,
                "queries": self.queries,
                "eval_queries": self.eval_queries,
                "algorithm": self.alg.name,
                "generator": _encode_rng(self.generator.get_state()),
                "shuffle_generator": _encode_rng(self.shuffle_generator.get_state()),
                "history": self.history,
                "config": self.config.to_dict(),
            }
            tmp = path / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
            tmp.replace(path / STATE_FILE)  # written last: a checkpoint without it is incomplete
            self._rotate_checkpoints()
        acc.wait_for_everyone()
        return path

    def _rotate_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        root = self.output_dir / "checkpoints"
        if not limit or not root.is_dir():
            return
        done = sorted(
            (p for p in root.iterdir() if re.fullmatch(r"iter-\d+", p.name)), key=lambda p: int(p.name.split("-")[1])
        )
        for old in done[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore everything :meth:`save_checkpoint` saved; training continues at the saved iteration."""
        path = Path(path)
        if not (path / STATE_FILE).exists():
            raise FileNotFoundError(
                f"{path} is not a complete nashalign checkpoint (no {STATE_FILE}); pick a directory under "
                f"{self.output_dir / 'checkpoints'} or set trainer.resume=true for the newest one."
            )
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("algorithm") != self.alg.name:
            raise ValueError(
                f"checkpoint {path} was written by {state.get('algorithm')!r}, but this run trains "
                f"{self.alg.name!r}; use a different trainer.output_dir."
            )
        self.accelerator.load_state(str(path))
        extra = (
            torch.load(path / EXTRA_FILE, map_location=self.accelerator.device) if (path / EXTRA_FILE).exists() else {}
        )
        self._previous = extra.get("previous")
        self._ema = extra.get("ema")
        self._centre = extra.get("centre")
        self._half = extra.get("half")
        self.iteration = int(state["iteration"])
        self.queries = int(state["queries"])
        self.eval_queries = int(state.get("eval_queries", 0))
        self.generator.set_state(_decode_rng(state["generator"]))
        self.shuffle_generator.set_state(_decode_rng(state["shuffle_generator"]))
        self.history = list(state.get("history", []))
        if self.accelerator.is_main_process:  # metrics.jsonl = history up to the checkpoint (drop later lines)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
                for row in self.history:
                    fh.write(json.dumps({"algorithm": self.alg.name, **row}) + "\n")
        log.info("resumed from %s at iteration %d", path, self.iteration)


# =============================================================================================== models from scratch
def build_scratch_policy(
    prompts: Sequence[str] | None = None,
    *,
    arch: str = "qwen2",
    vocab_size: int = 8192,
    tokenizer_texts: Sequence[str] | None = None,
    dtype: str | None = None,
    device: str | None = None,
    seed: int = 0,
    **config: Any,
) -> Any:
    """A randomly initialised causal LM (e.g. a Qwen2-0.5B-shaped config) with a locally trained BPE tokenizer.

    For throughput runs where no checkpoint can be downloaded: the tokenizer is trained on
    ``tokenizer_texts`` (default: the prompts) with :func:`nashalign.llm.tiny.build_tokenizer`, the model is
    ``AutoModelForCausalLM.from_config(<arch>Config(**config))``.  ``arch``: ``"qwen2"`` or ``"llama"``.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from nashalign.llm.policy import CausalLMPolicy, resolve_dtype
    from nashalign.llm.tiny import build_tokenizer

    texts = list(tokenizer_texts or prompts or [])
    if not texts:
        raise ValueError("build_scratch_policy needs prompts or tokenizer_texts to train its tokenizer on.")
    classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if arch not in classes:
        raise ValueError(f"arch must be one of {sorted(classes)}, got {arch!r}.")
    tok = build_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    cfg = classes[arch](
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **config,
    )
    torch_dtype = resolve_dtype(dtype)
    model = AutoModelForCausalLM.from_config(cfg, **({"dtype": torch_dtype} if torch_dtype else {}))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return CausalLMPolicy(model, tok, use_chat_template=False, device=device)


# =============================================================================================== benchmark curves
def collect_runs(root: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Read every ``metrics.jsonl`` under ``root`` (a run or a multirun directory): ``{label: rows}``.

    The label is the algorithm name (suffixed with the job directory when an algorithm appears twice).
    """
    runs: dict[str, list[dict[str, Any]]] = {}

    def natural(path: Path) -> list[Any]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]

    for path in sorted(Path(root).rglob("metrics.jsonl"), key=natural):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            continue
        label = str(rows[0].get("algorithm", path.parent.name))
        if label in runs:
            label = f"{label} ({path.parent.name})"
        runs[label] = rows
    return runs


def plot_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    keys: Sequence[str] = ("exploitability", "kl_target"),
    *,
    x: str = "iteration",
    title: str | None = None,
) -> Path | None:
    """One log-scale panel per metric in ``keys`` (readable names, strong colours, a title), one curve per run.

    Drawn by :func:`nashalign.reporting.plot_metric_histories`.  Returns the path, or None when no run has
    any of ``keys``.
    """
    from nashalign.reporting import plot_metric_histories

    return plot_metric_histories(runs, path, keys, x=x, title=title)


def summary_table(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str] = ("exploitability", "kl_target"),
) -> str:
    """A markdown table: for each run, each key's first and last recorded value."""
    head = "| run | " + " | ".join(f"{k} before | {k} after" for k in keys) + " | queries |"
    sep = "|---" * (1 + 2 * len(keys) + 1) + "|"
    lines = [head, sep]
    for label, rows in runs.items():
        cells = []
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            cells += [f"{vals[0]:.4g}" if vals else "-", f"{vals[-1]:.4g}" if vals else "-"]
        q = max((int(r.get("queries", 0)) for r in rows), default=0)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {q} |")
    return "\n".join(lines)


class BenchmarkSummary(Callback):
    """Hydra callback: after a multirun, write ``summary.md`` and ``curves.png`` from every job's metrics.

    Registered by ``conf/experiment/lm_benchmark.yaml`` under ``hydra.callbacks``.
    """

    def __init__(self, keys: Sequence[str] = ("exploitability", "kl_target"), filename: str = "curves.png") -> None:
        self.keys = list(keys)
        self.filename = filename

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        self.write(root)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:  # single run: the run's own directory
        from hydra.core.hydra_config import HydraConfig

        self.write(Path(HydraConfig.get().runtime.output_dir))

    def write(self, root: Path) -> None:
        runs = collect_runs(root)
        if not runs:
            return
        table = summary_table(runs, self.keys)
        (root / "summary.md").write_text(table + "\n", encoding="utf-8")
        plot_curves(runs, root / self.filename, self.keys)
        print(table)
        print(f"curves: {root / self.filename}")
