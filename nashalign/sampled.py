"""Sampled-feedback mode of the tabular solver: the LLM training loop, on a softmax table.

Each iteration (and phase) of ``solve(..., mode="sampled")``:

1. asks the algorithm whom its signal is measured against (``alg.opponents``);
2. draws ``batch`` contexts and responses from the current table policy (or from the opponents) and
   asks a stochastic preference oracle (Bernoulli outcomes drawn from ``P`` by default: noisy human
   feedback) for exactly what the algorithm's estimator needs (:mod:`nashalign.estimators`);
3. takes ``inner_steps`` optimiser steps on ``alg.loss`` over a :class:`~nashalign.policies.SoftmaxTable`
   started at ``pi_t``: the same loss the LLM trainer uses;
4. hands the trained log-policy back to the algorithm (``alg.accept``).

Oracle queries are counted and reported in the history (``queries`` column).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from nashalign import _xp
from nashalign._validation import check_int, check_positive, check_seed
from nashalign.algorithms.base import Algorithm, Opponent, State, feedback_inputs, response_prompts
from nashalign.estimators import ESTIMATORS, Feedback, check_form_estimator, estimate
from nashalign.game import PreferenceGame
from nashalign.policies import SoftmaxTable

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
DEFAULT_LR = {"adam": 0.05, "adamw": 0.05, "sgd": 0.5}


def check_oracle_callable(oracle: Any) -> None:
    """``oracle`` is None (the game's Bernoulli oracle) or callable as ``oracle(prompts, first, second)``."""
    if oracle is not None and (not callable(oracle) or isinstance(oracle, type)):
        raise TypeError(
            f"oracle must be callable as oracle(prompts, first, second) -> P(first > second | prompt), or None for "
            f"the game's Bernoulli oracle; got {type(oracle).__name__} {oracle!r:.60}."
        )


class SampledRunner:
    """One sampled iteration at a time on a softmax table (see the module docstring).

    Args:
        game: the game (its ``P`` drives the default oracle).
        alg: the algorithm.
        oracle: a preference oracle over (context id, response id) pairs; default
            ``MatrixOracle(game, bernoulli=True, seed=seed)``.
        batch: contexts sampled per iteration (with replacement).
        inner_steps: optimiser steps on the loss per phase (``lift == "gradient_step"`` algorithms take one
            SGD step with learning rate ``eta``, their definition).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: optimiser learning rate (default 0.05 for Adam, 0.5 for SGD).
        estimator: ``"pair"``, ``"opponent"`` or ``"winrate"`` (default: the algorithm's).
        k: responses per context for the loss (default 2; 4 for ``winrate``).
        seed: seeds the sampling generator (and the default oracle).
    """

    def __init__(
        self,
        game: PreferenceGame,
        alg: Algorithm,
        *,
        oracle: Any = None,
        batch: int = 64,
        inner_steps: int = 50,
        optimizer: str = "adam",
        lr: float | None = None,
        estimator: str | None = None,
        k: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}.")
        self.estimator = alg.estimator if estimator is None else estimator
        if not isinstance(self.estimator, str) or self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {self.estimator!r}.")
        check_form_estimator(alg, self.estimator)
        check_oracle_callable(oracle)
        self.game = game
        self.alg = alg
        self.batch = check_int(batch, "batch", 1, "It is the number of contexts sampled per iteration.")
        self.inner_steps = check_int(inner_steps, "inner_steps", 1)
        self.optimizer = optimizer
        self.lr = check_positive(lr, "lr") if lr is not None else DEFAULT_LR[optimizer]
        self.k = check_int(k, "k", 2) if k is not None else (4 if self.estimator == "winrate" else 2)
        self.device = game.P.device if game.is_torch else torch.device("cpu")
        self.dtype = game.P.dtype if game.is_torch else torch.float64
        seed = 0 if seed is None else check_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        if oracle is None:
            from nashalign.oracles import MatrixOracle

            oracle = MatrixOracle(game, bernoulli=True, seed=seed + 1)
        self.oracle = oracle
        self.queries = 0
        #: consecutive iterations in which every sampled row repeated one response (see ``solve``'s "collapsed")
        self.silent_iterations = 0
        self.table: SoftmaxTable | None = None

    # ---------------------------------------------------------------- sampling
    def _torch(self, x: Any) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(_xp.to_numpy(x))
        return t.to(device=self.device, dtype=self.dtype)

    def _sampler(self, ctx: torch.Tensor, logp_current: torch.Tensor):
        def sample(opp: Opponent | None, prompt_index: torch.Tensor, k: int) -> torch.Tensor:
            logq = logp_current if opp is None else self._torch(opp.logq)
            probs = torch.exp(logq[ctx[prompt_index.to(self.device)]])  # (B, n)
            draws = torch.multinomial(probs, k, replacement=True, generator=self.generator)  # (B, k)
            return draws.reshape(-1)

        return sample

    # ---------------------------------------------------------------- one iteration
    def iterate(self, state: State) -> State:
        """One full iteration (all phases) from sampled feedback; returns the next state."""
        alg = self.alg
        silent = True
        for phase in range(alg.phases):
            state, one = self._phase(state, phase)
            silent = silent and one
        self.silent_iterations = self.silent_iterations + 1 if silent else 0
        return state

    def _phase(self, state: State, phase: int) -> tuple[State, bool]:
        """One phase; also whether every row of its feedback repeated one response (no signal: a collapse)."""
        alg = self.alg
        logp_t = self._torch(state.logp)  # (C, n)
        logmu = self._torch(state.logmu)
        C = logp_t.shape[0]
        ctx = torch.randint(0, C, (self.batch,), generator=self.generator, device=self.device)  # (B,)
        opps = alg.opponents(state, phase)
        fb: Feedback = estimate(
            self.estimator, opps, ctx, self._sampler(ctx, logp_t), self.oracle, k=self.k, pairwise_rows=alg.pairwise
        )
        self.queries += int(fb.queries)
        # Per response: its context and id, then the shared builder gathers anchor / reference / behaviour rows.
        resp_ctx = ctx[response_prompts(fb.index, fb.prompt, len(fb.responses)).to(self.device)]  # (N,)
        resp_id = fb.responses.to(self.device)  # (N,)
        prev = self._torch(state.memory["prev"])[resp_ctx, resp_id] if alg.uses_previous else None  # log pi_{t-1}
        template = feedback_inputs(
            alg, fb, logp_t[resp_ctx, resp_id], logmu[resp_ctx, resp_id], step=state.t, logp_previous=prev
        )
        idx = fb.index.to(self.device)
        rows_ctx, resp = resp_ctx[idx], resp_id[idx]  # (R, K)
        silent = bool((resp == resp[:, :1]).all())
        if self.table is None:
            self.table = SoftmaxTable(logp_t)
        else:
            self.table.reset(logp_t)
        params = list(self.table.parameters())
        if alg.lift == "gradient_step":
            opt = torch.optim.SGD(params, lr=alg.step_size(state.t))
            steps = 1
        else:
            opt = OPTIMIZERS[self.optimizer](params, lr=self.lr)
            steps = self.inner_steps
        # The loss averages over rows of all contexts, i.e. (1/C) sum_c L_c: scale by C so that one SGD step
        # per context matches the per-context update (the gradient-step lift's definition).
        scale = float(C) if alg.lift == "gradient_step" else 1.0
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            logp_theta = self.table.log_probs()[rows_ctx, resp]  # (R, K)
            out = alg.loss(replace(template, logp=logp_theta))
            (out.loss * scale).backward()
            opt.step()
        new = self.table.log_probs().detach()
        keep = torch.isfinite(logp_t) | (torch.isfinite(logmu) & (alg.tau > 0))
        new = torch.where(keep, new, logp_t)  # zero-probability responses stay at zero
        return alg.accept(state, _xp.like(new, state.logp), phase), silent
