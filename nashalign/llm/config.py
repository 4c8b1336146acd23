"""``TrainerConfig``: every setting of :class:`~nashalign.llm.trainer.NashTrainer`, validated on construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from nashalign.estimators import ESTIMATORS
from nashalign.llm.generation import GENERATION_BACKENDS, VLLMOptions

__all__ = ["TrainerConfig", "TIMING_KEYS"]

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
        generation (`str`, defaults to ``"hf"``): the sampler when ``NashTrainer(sampler=...)`` is not given:
            ``"hf"`` (:class:`~nashalign.llm._decode.HFSampler`, the reference) or ``"vllm"``
            (:class:`~nashalign.llm.vllm_backend.VLLMSampler`; weights re-pushed after every change).
        vllm (`dict`, *optional*): :class:`~nashalign.llm.generation.VLLMOptions` (``mode: colocate|server``,
            ``server_url``, ``gpu_memory_utilization``, ``sleep``, ...), used with ``generation="vllm"``.
        gradient_checkpointing (`bool`, defaults to False): recompute activations in the backward pass
            (``model.gradient_checkpointing_enable``, non-reentrant): less memory, about one more forward.
        opponent_offload (`bool`, defaults to True): keep the opponent bank (previous iterate, EMA, EGPO's
            ``theta_t`` and optimizer state) on the CPU, pinned (:mod:`nashalign.llm.opponents`); False keeps
            it on the accelerator (faster swaps, more device memory).

    Evaluation, logging, checkpoints:
        eval_every (`int`, defaults to 1): call the ``evaluate`` callback every this many iterations (0: only
            before and after training).
        eval_prompts (`list[str]`, *optional*): held-out prompts; on the ``eval_every`` schedule (and before
            training) the policy is compared with its reference there (``eval/win_rate``, ``eval/lc_win_rate``,
            with intervals; see :func:`nashalign.llm.evaluate.heldout_metrics`), ``eval_samples`` samples per prompt.
        eval_oracle (*optional*): the held-out evaluation's oracle (a callable, or a dotted import path); default
            the training oracle.  Not part of checkpoints or tracker configs (its name is).
        eval_samples (`int`, defaults to 2): samples per held-out prompt.
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
        merge_lora (`bool`, defaults to False): under LoRA, ``final/`` holds the base with the adapter merged in
            (a plain model ``AutoModelForCausalLM.from_pretrained`` loads alone) instead of the adapter.
        overwrite_output_dir (`bool`, defaults to False): a fresh run into an ``output_dir`` that already holds
            a run (``metrics.jsonl``, ``checkpoints/`` or ``final/``) is refused unless this is True (those
            are then deleted) or ``resume`` is set.
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
    generation: str = "hf"  # [generation hook] hf | vllm
    vllm: dict[str, Any] | None = None  # [generation hook] VLLMOptions
    gradient_checkpointing: bool = False
    opponent_offload: bool = True
    eval_every: int = 1
    eval_prompts: list[str] | None = None
    eval_oracle: Any = None
    eval_samples: int = 2
    missing_eos_penalty: float | None = None
    track_win_rate: bool = True
    output_dir: str = "outputs/llm"
    save_every: int = 0
    save_total_limit: int | None = None
    save_final_model: bool = True
    merge_lora: bool = False
    overwrite_output_dir: bool = False
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
        self._check_eval()
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
        for name in ("gradient_checkpointing", "opponent_offload", "merge_lora", "overwrite_output_dir"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"trainer.{name} must be true or false, got {getattr(self, name)!r}.")
        if not isinstance(self.resume, (bool, str)):
            raise ValueError(f"trainer.resume must be true/false or a checkpoint path, got {self.resume!r}.")
        if self.lora is not None and not isinstance(self.lora, Mapping):
            raise ValueError(f"trainer.lora must be a mapping of peft.LoraConfig kwargs or null, got {self.lora!r}.")
        if self.lora is not None:
            self.lora = dict(self.lora)
        if self.generation not in GENERATION_BACKENDS:  # [generation hook]
            raise ValueError(f"trainer.generation must be one of {list(GENERATION_BACKENDS)}, got {self.generation!r}.")
        if self.vllm is not None:
            self.vllm = VLLMOptions.from_mapping(self.vllm).to_dict()
        names = [self.log_with] if isinstance(self.log_with, str) else list(self.log_with or [])
        bad = [n for n in names if n not in TRACKERS]
        if bad:
            raise ValueError(f"trainer.log_with: unknown tracker(s) {bad}; choose from {list(TRACKERS)} (or null).")
        self.log_with = names

    def _check_eval(self) -> None:
        """Validate the held-out evaluation settings and the missing-EOS penalty."""
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
        """Plain values (JSON-ready); an ``eval_oracle`` object becomes its name."""
        d = asdict(replace(self, eval_oracle=None))  # an oracle object is not a setting
        if self.eval_oracle is not None:
            from nashalign.oracles.base import oracle_name

            d["eval_oracle"] = self.eval_oracle if isinstance(self.eval_oracle, str) else oracle_name(self.eval_oracle)
        d["adam_betas"] = list(self.adam_betas)
        return d
