"""The known-equilibrium language-model benchmark: a tiny LM whose equilibrium is computable exactly.

A tiny causal LM and BPE tokenizer are built locally (no downloads) and warmed up by a short
supervised phase so that, for each of a few prompts, its distribution over a finite set of valid
one-word responses is a non-trivial reference ``mu``.  Each prompt carries its own class-level
preference matrix (rock-paper-scissors, an intransitive population game, a transitive
Bradley-Terry game).  Any other response is *invalid* and loses to every valid one.

Because the valid set is finite, everything is measured exactly, with no sampling:

* :func:`response_distribution` enumerates ``pi_LM(y | x)`` for each valid ``y`` as the
  teacher-forced probability of the token sequence ``y </s>``; the remainder ``1 - sum_y pi_LM(y|x)``
  is the invalid mass (it also holds non-canonical tokenisations and variants such as a leading
  space, which the oracle would accept after ``strip``; after warm-up that mass is negligible);
* :func:`extended_game` is the class game plus one "invalid" class: ``P(invalid > valid) = 0``,
  ``P(invalid > invalid) = 1/2``, the game :class:`~nashalign.oracles.ClassMatrixOracle` plays on
  strings;
* :class:`ExactEvaluator` / :func:`evaluate_exact` give per-prompt exploitability (unregularised),
  regularised exploitability ``tau KL(pi || BR_tau(pi))``, and ``KL(pi*_tau || pi_LM)`` to the
  regularised equilibrium of the extended game with reference ``mu`` = the warmed-up LM's own
  distribution (solved once, by :func:`~nashalign.equilibrium.solve_regularized_nash`).

Typical use (what the LM trainer's benchmark does)::

    task = build_task()
    policy = build_tiny_policy(task, seed=0)              # ~10 s on a laptop CPU
    evaluator = ExactEvaluator(task, tau=0.1, mu=response_distribution(policy, task))
    ...train...; evaluator(policy).as_dict()             # {"exploitability": ..., "kl_target": ...}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nashalign.game import PreferenceGame

__all__ = [
    "SyntheticTask",
    "Evaluation",
    "ExactEvaluator",
    "build_task",
    "build_task_tokenizer",
    "build_tiny_policy",
    "warm_up",
    "response_distribution",
    "extended_game",
    "evaluate_exact",
]

log = logging.getLogger(__name__)

# name -> (prompt, valid responses, default warm-up reference)
_CATALOGUE: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "rps": ("Rock, paper or scissors?", ("rock", "paper", "scissors"), (0.6, 0.3, 0.1)),
    "population": ("Pick a color:", ("red", "green", "blue"), (0.15, 0.2, 0.65)),
    "transitive": ("Pick a number:", ("one", "two", "three"), (0.55, 0.3, 0.15)),
}


def _class_matrix(name: str) -> np.ndarray:
    """The ``(3, 3)`` class-level preference matrix of a catalogue game."""
    from nashalign import games

    if name == "rps":
        return np.asarray(games.rock_paper_scissors().P[0], dtype=np.float64)
    if name == "population":
        # Three Bradley-Terry raters with cyclic rankings (a Condorcet cycle) and unequal weights:
        # intransitive, with a mixed, non-uniform Nash equilibrium.
        # Majorities: red > green (0.65), green > blue (0.75), blue > red (0.6).
        rewards = [[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]]
        return np.asarray(games.population(rewards, weights=[0.4, 0.35, 0.25], beta=0.25).P[0], dtype=np.float64)
    if name == "transitive":
        # The best response ("three") is the reference's least likely one.
        return np.asarray(games.bradley_terry([0.0, 1.0, 2.0]).P[0], dtype=np.float64)
    raise ValueError(f"unknown synthetic game {name!r}; choose from {sorted(_CATALOGUE)}.")


@dataclass
class SyntheticTask:
    """Prompts, their valid responses, class matrices and the warm-up reference distribution.

    Attributes:
        prompts: ``C`` prompt strings.
        responses: ``C`` tuples of ``n`` valid response strings (class ``j`` of prompt ``c`` is
            ``responses[c][j]``); every prompt has the same ``n``.
        matrices: ``(C, n, n)`` float64, ``P_c[i, j] = P(responses[c][i] > responses[c][j] | prompts[c])``.
        warmup_reference: ``(C, n)`` the distribution the supervised warm-up fits (the LM only
            approximates it: the benchmark's ``mu`` is the LM's own distribution afterwards).
        names: a label per prompt (``"rps"``, ...).
    """

    prompts: list[str]
    responses: list[tuple[str, ...]]
    matrices: np.ndarray
    warmup_reference: np.ndarray
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        C = len(self.prompts)
        if C == 0 or len(set(self.prompts)) != C:
            raise ValueError("SyntheticTask needs at least one prompt, all distinct.")
        if len(self.responses) != C:
            raise ValueError(f"responses has {len(self.responses)} entries for {C} prompts; give one tuple per prompt.")
        sizes = {len(r) for r in self.responses}
        if len(sizes) != 1:
            raise ValueError(f"every prompt must have the same number of valid responses; got sizes {sorted(sizes)}.")
        n = sizes.pop()
        for c, rs in enumerate(self.responses):
            if len(set(rs)) != n or any((not r) or r != r.strip() for r in rs):
                raise ValueError(f"prompt {c}: responses must be distinct, non-empty and unpadded strings; got {rs}.")
        self.matrices = np.asarray(self.matrices, dtype=np.float64)
        if self.matrices.shape != (C, n, n):
            raise ValueError(f"matrices must have shape ({C}, {n}, {n}); got {self.matrices.shape}.")
        PreferenceGame(self.matrices)  # validates P + P^T = 1 and the range
        ref = np.asarray(self.warmup_reference, dtype=np.float64)
        if ref.shape != (C, n) or (ref <= 0).any() or np.abs(ref.sum(-1) - 1).max() > 1e-9:
            raise ValueError(f"warmup_reference must be ({C}, {n}) positive rows summing to 1; got {ref.round(4)}.")
        self.warmup_reference = ref
        if not self.names:
            self.names = [f"prompt{c}" for c in range(C)]

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    @property
    def num_classes(self) -> int:
        return len(self.responses[0])

    def game(self) -> PreferenceGame:
        """The class game (valid responses only) with the warm-up reference."""
        return PreferenceGame(self.matrices, ref=self.warmup_reference)

    def oracle(self) -> Any:
        """A :class:`~nashalign.oracles.ClassMatrixOracle` over the task's strings (invalid loses)."""
        from nashalign.oracles import ClassMatrixOracle

        classes = {p: {r: j for j, r in enumerate(rs)} for p, rs in zip(self.prompts, self.responses)}
        matrices = {p: self.matrices[c] for c, p in enumerate(self.prompts)}
        return ClassMatrixOracle(classes, matrices, name="SyntheticTask oracle")

    def texts(self) -> list[str]:
        """Corpus for the tokenizer: prompts, responses and prompt+response concatenations."""
        out: list[str] = []
        for p, rs in zip(self.prompts, self.responses):
            out.append(p)
            out.extend(rs)
            out.extend(p + r for r in rs)
        return out


def build_task(
    names: Sequence[str] = ("rps", "population", "transitive"),
    warmup_reference: Sequence[Sequence[float]] | None = None,
) -> SyntheticTask:
    """The default benchmark: one prompt per named game (``"rps"``, ``"population"``, ``"transitive"``).

    ``warmup_reference`` overrides the per-game default warm-up distributions (``(C, 3)``).
    """
    names = list(names)
    unknown = [n for n in names if n not in _CATALOGUE]
    if unknown or not names:
        raise ValueError(f"unknown synthetic games {unknown}; choose from {sorted(_CATALOGUE)}.")
    ref = warmup_reference if warmup_reference is not None else [_CATALOGUE[n][2] for n in names]
    return SyntheticTask(
        prompts=[_CATALOGUE[n][0] for n in names],
        responses=[_CATALOGUE[n][1] for n in names],
        matrices=np.stack([_class_matrix(n) for n in names]),
        warmup_reference=np.asarray(ref, dtype=np.float64),
        names=names,
    )


def build_task_tokenizer(task: SyntheticTask, vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer trained on the task's strings (deterministic)."""
    from nashalign.llm.tiny import build_tokenizer

    return build_tokenizer(task.texts() * 20, vocab_size=vocab_size)


def warm_up(
    policy: Any,
    task: SyntheticTask,
    steps: int = 150,
    lr: float = 1e-2,
) -> list[float]:
    """Supervised warm-up: fit ``pi(y | x) ~ warmup_reference`` on the ``C * n`` valid pairs.

    Minimises the EXPECTED cross-entropy of the SFT data, ``-(1/C) sum_c sum_y mu_c(y) log pi(y </s> | x_c)``
    (exactly the mean of the sampled-pairs SFT loss, without its sampling noise), full batch, with
    Adam.  Its minimiser is ``pi = mu`` on valid responses and no invalid mass; a short run leaves
    the LM close to, not at, it.  Returns the loss per step.
    """
    C, n = task.num_prompts, task.num_classes
    samples = policy.encode(
        task.prompts, [r for rs in task.responses for r in rs], prompt_index=torch.arange(C).repeat_interleave(n)
    )
    weights = torch.as_tensor(task.warmup_reference.reshape(-1) / C, dtype=torch.float32, device=policy.device)
    opt = torch.optim.Adam(policy.parameters_to_train(), lr=lr)
    policy.model.train()
    losses = []
    for _ in range(steps):
        logp = policy.sequence_logprobs(samples, grad=True)  # (C*n,)
        loss = -(weights * logp).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    opt.zero_grad(set_to_none=True)  # leave no .grad behind: it would be added to the trainer's first step
    policy.model.eval()
    return losses


def build_tiny_policy(
    task: SyntheticTask,
    seed: int = 0,
    out_dir: str | None = None,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    vocab_size: int = 320,
    arch: str = "llama",
    warmup_steps: int = 150,
    warmup_lr: float = 1e-2,
    **policy_kwargs: Any,
) -> Any:
    """Tokenizer + tiny causal LM for ``task``, warmed up to a non-trivial ``mu`` (no downloads).

    Deterministic in ``seed`` (CPU).  With ``out_dir`` the warmed-up model and tokenizer are saved
    there (``save_pretrained``) and the returned policy is reloaded through
    :meth:`CausalLMPolicy.from_pretrained`, the code path of real checkpoints; ``policy_kwargs``
    (``lora``, ``dtype``, ``device``, ...) go to that call.  Without ``out_dir`` they go to the
    constructor (``lora``, ``device``, ...).

    The warm-up runs single-threaded (``torch.set_num_threads(1)``, restored afterwards): for a model
    this small, intra-op threads only add synchronisation, and on a loaded machine oversubscribed
    threads slow it down by two orders of magnitude (measured: 20 steps 0.25 s on one thread, 29 s on
    two with other jobs running).  Defaults build and warm up in about 2-4 s.
    """
    from nashalign.llm.policy import CausalLMPolicy
    from nashalign.llm.tiny import build_causal_lm

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = build_task_tokenizer(task, vocab_size=vocab_size)
        model = build_causal_lm(
            tok, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed, arch=arch
        )
        model.generation_config.pad_token_id = tok.pad_token_id
        torch.manual_seed(seed)
        warm = CausalLMPolicy(model, tok, use_chat_template=False, device="cpu")
        losses = warm_up(warm, task, steps=warmup_steps, lr=warmup_lr)
    finally:
        torch.set_num_threads(threads)
    log.info(
        "synthetic warm-up: %d steps, loss %.4f -> %.4f, %.1f s",
        warmup_steps,
        losses[0] if losses else float("nan"),
        losses[-1] if losses else float("nan"),
        time.perf_counter() - t0,
    )
    if out_dir is None:
        return CausalLMPolicy(model, tok, use_chat_template=False, **policy_kwargs)
    warm.save_pretrained(out_dir)
    policy_kwargs.setdefault("use_chat_template", False)
    return CausalLMPolicy.from_pretrained(out_dir, **policy_kwargs)


def response_distribution(policy: Any, task: SyntheticTask, *, model: Any = None) -> np.ndarray:
    """Exact ``(C, n + 1)`` float64 distribution: ``pi(y | x_c)`` per valid ``y``, then the invalid mass.

    ``pi(y | x)`` is the teacher-forced probability of the canonical tokens of ``y`` followed by EOS
    (one forward over the ``C * n`` pairs).  The last column is ``1 - sum_y pi(y | x)``, clipped at 0
    (float32 rounding) with the row renormalised.  ``model="reference"`` evaluates ``mu``.
    """
    C, n = task.num_prompts, task.num_classes
    samples = policy.encode(
        task.prompts, [r for rs in task.responses for r in rs], prompt_index=torch.arange(C).repeat_interleave(n)
    )
    logp = policy.sequence_logprobs(samples, model=model).double().cpu().numpy().reshape(C, n)
    valid = np.exp(logp)
    invalid = np.clip(1.0 - valid.sum(-1, keepdims=True), 0.0, None)
    dist = np.concatenate([valid, invalid], axis=-1)  # (C, n + 1)
    return dist / dist.sum(-1, keepdims=True)


def extended_game(task: SyntheticTask, mu: Any = None) -> PreferenceGame:
    """The class game plus an "invalid" class ``n``, with reference ``mu`` (``(C, n + 1)``, default uniform).

    ``P[c, :n, :n] = task.matrices[c]``, ``P[c, y, invalid] = 1``, ``P[c, invalid, y] = 0`` for valid
    ``y``, ``P[c, invalid, invalid] = 1/2``: the game the :meth:`SyntheticTask.oracle` plays on strings.
    """
    C, n = task.num_prompts, task.num_classes
    P = np.full((C, n + 1, n + 1), 0.5)
    P[:, :n, :n] = task.matrices
    P[:, :n, n] = 1.0
    P[:, n, :n] = 0.0
    if mu is not None:
        mu = np.asarray(mu, dtype=np.float64)
        if mu.shape != (C, n + 1):
            raise ValueError(
                f"mu must be ({C}, {n + 1}): valid classes then the invalid mass (response_distribution); got {mu.shape}."
            )
    return PreferenceGame(P, ref=mu)


# The exact metrics live in their own module; re-exported here (the names users import from this one).
from nashalign.llm.exact_metrics import Evaluation, ExactEvaluator, evaluate_exact  # noqa: E402
