"""SPPO: Self-Play Preference Optimization (Wu et al. 2024; SPEC.md section 7).

Tabular rule (MWU on the unregularised game, the anchor is the previous iterate, not the SFT model)::

    pi_{t+1}(y) ∝ pi_t(y) exp( eta P(y > pi_t) ),      eta = 1 / beta_SPPO.

Guarantee: the average iterate is an ``O(1/sqrt T)``-NE with ``eta = Theta(1/sqrt T)``; no last-iterate
guarantee.  Win rates ``P(y > pi_t)`` are estimated from ``K`` samples of ``pi_t`` including the
self-comparison (``estimator="winrate"``, as ``scripts/compute_prob.py``).

Loss forms: ``"regression"`` (default; pairwise, cancels ``log Z_t`` so the table minimiser is the step
exactly) and ``"sppo"``, the paper's per-response square loss
``1/2 sum_{y in {y_w, y_l}} (log pi(y)/pi_t(y) - eta (Phat(y > pi_t) - 1/2))^2``, which approximates
``log Z_t`` by ``eta/2``.

Note: SPEC.md section 11 note 6 recommends the pairwise form; ``form="sppo"`` reproduces the official
``sppo_loss``.

Reference: Y. Wu, Z. Sun, H. Yuan, K. Ji, Y. Yang, Q. Gu, arXiv 2405.00675 (ICLR 2025), eq. (3.6)/(4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class SPPO(MirrorAlgorithm):
    """SPPO's multiplicative update with the previous iterate as anchor (``tau`` must be 0)."""

    name = "sppo"
    reference = "Wu et al., 'Self-Play Preference Optimization for Language Model Alignment', arXiv 2405.00675."
    tau_rule = "zero"
    forms = ("regression", "sppo")
    estimator = "winrate"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
