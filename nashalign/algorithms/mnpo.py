"""MNPO: Multiplayer Nash Preference Optimization (Wu, Huang, et al. 2025); SPEC.md section 17.

The policy plays a population of players: the reference ``mu`` and its own recent iterates.  The
official trainer (``mnpo_scripts/mnpo_trainer.py``, ``mnpo_loss``) is INPO's square loss with the
anchor's ``log pi_t`` replaced by a weighted geometric mixture of the history ``pi_t, pi_{t-1}, ...``
(``max_history_t = 2`` in the released configs)::

    a_t = r log mu + (1 - r) [ (1 - lam) log pi_t + lam log pi_{t-1} ],      r = eta tau,
    log pi_{t+1} = normalize( a_t + eta P(. > pi_t) ),

with ``pi_{-1} = pi_0``; pairs come from ``pi_t`` (on-policy), so the signal is ``P(. > pi_t)`` and the
loss is ``E (h_t(y_w, y_l) - 1/(2 eta_inv))^2`` (here the pairwise regression onto
``eta (P(y > y') - 1/2)``).  ``lam = 0`` is INPO exactly.  Fixed point ``pi*_tau`` (at a fixed point the
history collapses to ``pi`` and the anchor is INPO's).  The official config sets the history weights
``[1.0, 0.0]`` (i.e. ``lam = 0``); nashalign's default ``lam = 0.5`` weighs the two players equally.

Reference: F. Wu, X. Huang, W. Xuan, et al., arXiv 2509.23102; code github.com/smiles724/MNPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nashalign import _xp
from nashalign.algorithms import _blocks
from nashalign.algorithms.base import LossInputs, MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.registry import register


def population_anchor(logp: Any, logp_prev: Any, logmu: Any, r: float, lam: float) -> Any:
    """``r log mu + (1 - r) [(1 - lam) log pi_t + lam log pi_{t-1}]``; ``-inf`` where ``pi_t = 0``."""
    if lam == 0:
        return _blocks.prox_anchor(logp, logmu, r, 1.0)
    dead = logp == float("-inf")
    zero = _xp.zeros_like(logp)
    hist = (1.0 - lam) * _xp.where(dead, zero, logp) + lam * _xp.where(dead, zero, logp_prev)
    return _xp.where(dead, logp, _blocks.prox_anchor(hist, logmu, r, 1.0))


@register
@dataclass(frozen=True)
class MNPO(MirrorAlgorithm):
    """INPO's step against ``pi_t`` anchored at a geometric mixture of ``mu``, ``pi_t`` and ``pi_{t-1}``."""

    name = "mnpo"
    reference = "Wu, Huang, et al., 'Multiplayer Nash Preference Optimization', arXiv 2509.23102."
    tau_rule = "positive"
    forms = ("regression", "logistic", "pg")
    estimator = "pair"
    uses_previous = True
    lam: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= float(self.lam) <= 1.0:
            raise ValueError(f"mnpo: lam (the weight of pi_(t-1) in the history) must be in [0, 1], got {self.lam!r}.")

    def init_memory(self, logp0, logmu):
        return {"prev": logp0}

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)

    def target(self, state: State, signal, phase: int = 0):
        eta = self.step_size(state.t)
        if self.tau * eta > 1 + 1e-12:
            raise ValueError(
                f"mnpo: the schedule gave eta_{state.t} = {eta:.4g} with tau = {self.tau}: eta * tau must be <= 1."
            )
        anchor = population_anchor(state.logp, state.memory["prev"], state.logmu, eta * self.tau, self.lam)
        return _blocks.mirror_step(anchor, eta, signal)

    def next_memory(self, state: State, logp_new):
        return {"prev": state.logp}

    def loss_anchor(self, inputs: LossInputs):
        if inputs.logp_previous is None:
            raise ValueError("mnpo: the loss needs LossInputs.logp_previous (log pi_{t-1} of each response).")
        r = self.step_size(inputs.step) * self.tau
        return population_anchor(inputs.logp_anchor, inputs.logp_previous, inputs.logp_ref, r, self.lam)
