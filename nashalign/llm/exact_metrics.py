"""Exact metrics of a language model on the known-equilibrium benchmark (:mod:`nashalign.llm.synthetic`):
per-prompt exploitability, regularised exploitability and ``KL(pi*_tau || pi_LM)`` of the LM's enumerated
response distribution in the task's extended game (valid classes plus "invalid")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from nashalign.llm.synthetic import SyntheticTask


def _synthetic() -> Any:
    from nashalign.llm import synthetic  # imported late: synthetic re-exports this module's names

    return synthetic

__all__ = ["Evaluation", "ExactEvaluator", "evaluate_exact"]


@dataclass
class Evaluation:
    """Exact metrics of an LM on the synthetic task, per prompt (``(C,)`` arrays) and their means.

    Attributes:
        distribution: ``(C, n + 1)`` the LM's distribution (valid classes, then invalid).
        exploitability: ``max_y P(y > pi) - 1/2`` in the extended game (unregularised; 0 at a Nash
            equilibrium of the class game with no invalid mass).
        reg_exploitability: ``tau KL(pi || BR_tau(pi))`` with reference ``mu`` (0 exactly at ``pi*_tau``).
        kl_target: ``KL(pi*_tau || pi)``, the Nash-MD convergence measure.
        invalid_mass: ``pi(invalid | x)``.
        tau: the regularisation strength used.
    """

    distribution: np.ndarray
    exploitability: np.ndarray
    reg_exploitability: np.ndarray
    kl_target: np.ndarray
    invalid_mass: np.ndarray
    tau: float
    names: list[str] = field(default_factory=list)

    @property
    def mean_exploitability(self) -> float:
        return float(self.exploitability.mean())

    @property
    def mean_reg_exploitability(self) -> float:
        return float(self.reg_exploitability.mean())

    @property
    def mean_kl_target(self) -> float:
        return float(self.kl_target.mean())

    @property
    def mean_invalid_mass(self) -> float:
        return float(self.invalid_mass.mean())

    def as_dict(self, per_prompt: bool = True) -> dict[str, float]:
        """Flat float metrics for trackers: means, then ``<metric>/<name>`` per prompt."""
        out = {
            "exploitability": self.mean_exploitability,
            "reg_exploitability": self.mean_reg_exploitability,
            "kl_target": self.mean_kl_target,
            "invalid_mass": self.mean_invalid_mass,
        }
        if per_prompt:
            names = self.names or [str(c) for c in range(len(self.exploitability))]
            for key in ("exploitability", "reg_exploitability", "kl_target", "invalid_mass"):
                for name, v in zip(names, getattr(self, key)):
                    out[f"{key}/{name}"] = float(v)
        return out


class ExactEvaluator:
    """Solves the extended game's regularised equilibrium once, then scores policies exactly.

    Args:
        task: the synthetic task.
        tau: KL strength ``> 0`` of the regularised target.
        mu: ``(C, n + 1)`` reference: the warmed-up LM's own :func:`response_distribution`, measured
            once before training.

    Attributes:
        game: the extended game with reference ``mu``.
        target: ``(C, n + 1)`` ``pi*_tau`` from :func:`~nashalign.equilibrium.solve_regularized_nash`.
        nash: ``(C, n + 1)`` a Nash equilibrium of the unregularised extended game (zero invalid mass).
    """

    def __init__(self, task: SyntheticTask, tau: float, mu: Any) -> None:
        from nashalign.equilibrium import solve_nash, solve_regularized_nash

        if not tau > 0:
            raise ValueError(f"tau must be > 0 for the regularised target, got {tau}.")
        self.task = task
        self.tau = float(tau)
        self.mu = np.asarray(mu, dtype=np.float64)
        self.game = _synthetic().extended_game(task, self.mu)
        self.target = np.asarray(solve_regularized_nash(self.game, self.tau)).reshape(self.mu.shape)
        self.nash = np.asarray(solve_nash(self.game)).reshape(self.mu.shape)

    def __call__(self, policy_or_distribution: Any) -> Evaluation:
        """Score a policy (anything with ``encode``/``sequence_logprobs``) or a ``(C, n + 1)`` distribution."""
        from nashalign.metrics import exploitability, kl_divergence

        if isinstance(policy_or_distribution, (np.ndarray, torch.Tensor, list, tuple)):
            dist = np.asarray(
                policy_or_distribution.detach().cpu()
                if isinstance(policy_or_distribution, torch.Tensor)
                else policy_or_distribution,
                dtype=np.float64,
            )
            if dist.shape != self.mu.shape:
                raise ValueError(
                    f"distribution must have shape {self.mu.shape} (valid classes + invalid); got {dist.shape}."
                )
        else:
            dist = _synthetic().response_distribution(policy_or_distribution, self.task)
        g = self.game
        return Evaluation(
            distribution=dist,
            exploitability=np.atleast_1d(np.asarray(exploitability(g, dist), dtype=np.float64)),
            reg_exploitability=np.atleast_1d(np.asarray(exploitability(g, dist, tau=self.tau), dtype=np.float64)),
            kl_target=np.atleast_1d(np.asarray(kl_divergence(g, self.target, dist), dtype=np.float64)),
            invalid_mass=dist[:, -1].copy(),
            tau=self.tau,
            names=list(self.task.names),
        )


def evaluate_exact(policy: Any, task: SyntheticTask, tau: float, mu: Any, target: Any = None) -> Evaluation:
    """One-shot :class:`ExactEvaluator` (``target`` optional: a precomputed ``pi*_tau``, skips the solve).

    For evaluations every few training steps build the :class:`ExactEvaluator` once instead.
    """
    if target is None:
        return ExactEvaluator(task, tau, mu)(policy)
    ev = ExactEvaluator.__new__(ExactEvaluator)
    ev.task, ev.tau, ev.mu = task, float(tau), np.asarray(mu, dtype=np.float64)
    ev.game = _synthetic().extended_game(task, ev.mu)
    ev.target = np.asarray(target, dtype=np.float64).reshape(ev.mu.shape)
    ev.nash = None  # type: ignore[assignment]
    return ev(policy)
