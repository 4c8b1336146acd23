"""SPO: Self-Play Preference Optimization, "A Minimaximalist Approach to RLHF" (Swamy et al. 2024; SPEC.md §6).

A single policy plays itself: each sampled response gets the self-play win-proportion reward
``r(y_i) = P(y_i > pi_t)`` (estimated from the other samples of the batch) and any no-regret RL update
follows.  The tabular idealisation is the mirror (natural policy-gradient) step::

    pi_{t+1}(y) ∝ pi_t(y) exp( eta P(y > pi_t) ),

so the average iterate reaches the minimax winner at ``O(1/sqrt T)``; the last iterate can cycle.

Loss: ``form="pg"`` (default), the KL-proximal policy-gradient objective
``E_{y ~ pi_t}[ rho(y) (log pi_theta(y) - log pi_t(y) - eta r(y)) ]`` with ``rho = pi_theta/pi_t``: a
PPO-style RL step on the win-proportion reward whose table minimiser is the step above.  On sampled
responses each sample contributes ``rho log rho - rho + 1 - eta rho (r(y_i) - b_i)``
(:func:`nashalign.algorithms._losses.policy_gradient`): a per-sample KL estimate that stays a divergence
and a leave-one-out baseline ``b_i``.  With the ``winrate`` estimator the centred reward is exactly
``(1/(K-1)) sum_{j != i} (P(y_i > y_j) - 1/2)``, Swamy et al.'s win proportion against the other samples
minus 1/2, so at ``pi_theta = pi_t`` the gradient is the unbiased REINFORCE estimate of the step's.
``form="regression"`` (the pairwise square loss) has the same table minimiser.
Reference: G. Swamy, C. Dann, R. Kidambi, Z. S. Wu, A. Agarwal, arXiv 2401.04056 (ICML 2024), Alg. 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class SPO(MirrorAlgorithm):
    """Self-play with the win-proportion reward and a KL-proximal policy-gradient step (``tau`` must be 0)."""

    name = "spo"
    reference = "Swamy et al., 'A Minimaximalist Approach to Reinforcement Learning from Human Feedback', arXiv 2401.04056."
    tau_rule = "zero"
    forms = ("pg", "regression")
    estimator = "winrate"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
