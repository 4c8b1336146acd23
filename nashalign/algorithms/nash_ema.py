"""Nash-EMA: mirror step against the policy with exponentially averaged logits (Munos et al. 2024, §7; SPEC.md 3.3).

Tabular form: keep ``z_t = (1 - beta) z_{t-1} + beta log pi_t`` (``z_0 = log pi_0``) and step against
``q_t = softmax(z_t)``::

    pi_{t+1} ∝ pi_t^{1 - eta tau} mu^{eta tau} exp( eta P(. > q_t) ).

A heuristic approximation of playing against the average of past policies (fictitious-play flavour);
the paper gives no guarantee beyond motivation.  For LLMs the EMA is over parameters, which equals the
EMA of logits only for a table.  [SPEC.md marks the EMA indexing as unverified.]
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign import _xp
from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class NashEMA(MirrorAlgorithm):
    """Mirror step against the exponential moving average of past iterates (rate ``beta``)."""

    name = "nash_ema"
    reference = "Munos et al., 'Nash Learning from Human Feedback', arXiv 2312.00886, Nash-EMA."
    forms = ("regression", "pg")
    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < float(self.beta) <= 1.0:
            raise ValueError(f"nash_ema: beta (the EMA rate) must be in (0, 1], got {self.beta!r}.")

    def init_memory(self, logp0, logmu):
        return {"ema": logp0}

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (Opponent("ema", 1.0, _xp.log_normalize(state.memory["ema"]), mix=self.beta),)

    def next_memory(self, state: State, logp_new):
        return {"ema": (1.0 - self.beta) * state.memory["ema"] + self.beta * logp_new}
