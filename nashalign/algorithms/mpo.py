"""MPO: Magnetic Preference Optimization (Wang et al. 2024; SPEC.md 14.1).

Magnetic mirror descent (MMD, Sokota et al. 2022) on the game regularised toward a *magnet* ``c_k``,
with the magnet reset to the current policy every ``every`` iterations.  The paper writes the step with
the MMD step ``eta_M``::

    pi_{t+1} ∝ ( pi_t  c_k^{eta_M tau}  exp(eta_M P(. > pi_t)) )^{1 / (1 + eta_M tau)},

which is nashalign's step-size form with ``eta = eta_M / (1 + eta_M tau)`` (use :meth:`MPO.from_paper`)::

    log pi_{t+1} = (1 - eta tau) log pi_t + eta tau log c_k + eta P(. > pi_t) + const,
    c_{k+1} = pi_{t+1}   when (t + 1) is a multiple of ``every``.

Guarantee (paper): with a fixed magnet MMD converges linearly (last iterate) to the regularised equilibrium
``pi*_tau(c_k)``; resetting the magnet to (an approximation of) it makes the magnets converge to a Nash
equilibrium of the ORIGINAL game (a proximal-point argument), so the last iterate does too.  The magnet is
the state's ``logmu``; the initial magnet is ``pi_0`` (the paper starts at ``pi_0 = pi_ref``).

Loss: the OMD/INPO pairwise regression with ``logp_ref`` = the magnet's log-probabilities (the LLM trainer
re-points the reference at the current policy when :meth:`recentres_at` says so).

Reference: M. Wang, C. Ma, Q. Chen, L. Meng, Y. Han, J. Xiao, Z. Zhang, J. Huo, W. J. Su, Y. Yang,
"Magnetic Preference Optimization: Achieving Last-iterate Convergence for Language Model Alignment",
arXiv 2410.16714 (ICLR 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign.algorithms.base import MirrorAlgorithm, Opponent, State, current
from nashalign.algorithms.comal import ProxCentre
from nashalign.algorithms.registry import register
from nashalign.schedules import from_mmd_step


@register
@dataclass(frozen=True)
class MPO(ProxCentre, MirrorAlgorithm):
    """MMD against the current policy, regularised toward a magnet reset to the iterate every ``every`` steps."""

    name = "mpo"
    reference = "Wang et al., 'Magnetic Preference Optimization', arXiv 2410.16714."
    tau_rule = "positive"
    forms = ("regression", "logistic", "pg")
    estimator = "pair"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_every()

    @classmethod
    def from_paper(cls, eta_mmd: float, tau: float, **kw: object) -> MPO:
        """Build from the paper's MMD step ``eta_M``: ``eta = eta_M / (1 + eta_M tau)``."""
        return cls(eta=from_mmd_step(eta_mmd, tau), tau=tau, **kw)

    def opponents(self, state: State, phase: int = 0) -> tuple[Opponent, ...]:
        return (current(state),)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        return self.recentre(super().accept(state, logp_new, phase))
