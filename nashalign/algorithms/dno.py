"""DNO: Direct Nash Optimization (Rosset et al. 2024; SPEC.md section 9).

Theoretical DNO (Alg. 1) uses the internal reward ``r_t(y) = P(y > pi_t)`` and the target
``pi_{t+1}(y) ∝ pi_t(y) exp(r_t(y) / eta_DNO)``: MWU with step ``eta = 1/eta_DNO`` (convert with
:func:`nashalign.schedules.from_inverse_step`).  The average iterate converges to the minimax winner at
``O(1/sqrt T)``.

Loss forms:

* ``"logistic"`` (default, Alg. 1): soft-label logistic regression of the log-ratio difference onto the
  reward difference, ``-E[ sigma(r(y1) - r(y2)) log sigma(h/eta) + sigma(r(y2) - r(y1)) log sigma(-h/eta) ]``
  with ``h = log pi(y1)/pi_t(y1) - log pi(y2)/pi_t(y2)``; its table minimiser is the step exactly.
* ``"contrastive"`` (DNO-Prct, Alg. 2): DPO with ``pi_t`` as reference on (best, worst) pairs kept when the
  reward margin is large; a heuristic (hard labels), not the exact step.

Reference: C. Rosset, C.-A. Cheng, A. Mitra, M. Santacroce, A. Awadallah, T. Xie, arXiv 2404.03715.
Note: SPEC.md marks DNO's details as unverified against the PDF; the forms above follow its Alg. 1/2 text.
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class DNO(MirrorAlgorithm):
    """DNO's MWU target with its regression (logistic) loss (``tau`` must be 0)."""

    name = "dno"
    reference = "Rosset et al., 'Direct Nash Optimization', arXiv 2404.03715."
    tau_rule = "zero"
    forms = ("logistic", "contrastive", "regression")
    estimator = "winrate"

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)
