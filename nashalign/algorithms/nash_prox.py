"""Nash Prox: online-IPO self-play inside a proximal-point loop (Tiapkin et al. 2025; SPEC.md 14.3).

The paper (arXiv 2505.19731, v2 title "Proximal Point Nash Learning from Human Feedback") shows that
self-play policy gradient on the online IPO loss can be unstable for small ``beta`` and stabilises it by a
proximal point: prox step ``k`` adds ``(1/eta_p) KL(pi || pi_k)`` to the ``beta``-regularised game.  The two
KL terms are one KL toward a geometric mixture,

    beta KL(pi || mu) + (1/eta_p) KL(pi || pi_k) = tau KL(pi || c_k) + const,
    tau = beta + 1/eta_p,   c_k ∝ pi_k^{1 - w} mu^w,   w = beta / tau,

so every prox step is an online-IPO game with strength ``tau`` and reference ``c_k``.  One iteration is one
exact online-IPO gradient step on that game (the softmax-PG step of :mod:`.online_ipo`, learning rate ``eta``)::

    theta_{t+1} = theta_t - eta * 4 pi_t ⊙ (e - E_{pi_t} e),   e = log(pi_t / c_k) - P(. > pi_t) / tau,
    c_{k+1} = mix_w(pi_{t+1}, mu)   when (t + 1) is a multiple of ``every``.

Fixed point: ``pi*_beta`` of the original reference (at ``pi = pi*_beta`` the centre's game has the same
equilibrium), reached in the last iterate; ``beta = 0`` targets the unregularised Nash equilibrium,
``beta = tau`` is plain online IPO.  The centre is the state's ``logmu`` (the loss reads it as
``logp_ref``); the original ``mu`` is ``memory["ref"]``.

Loss: the online IPO square loss of :mod:`.online_ipo` with the centre as reference; one SGD step on it with
exact weights is the step (``lift = "gradient_step"``).

[Parametrisation ``(tau, beta)`` = ``(beta + 1/eta_p, beta)`` of the paper; the paper's exact inner-loop
length and step are not reproduced here, see SPEC.md 14.3.]

Reference: D. Tiapkin, D. Calandriello, D. Belomestny, E. Moulines, A. Naumov, K. Rasul, M. Valko,
P. Menard, arXiv 2505.19731 (COLT 2026).
"""

from __future__ import annotations

from dataclasses import dataclass

from nashalign import _xp
from nashalign.algorithms.base import State
from nashalign.algorithms.comal import ProxCentre
from nashalign.algorithms.online_ipo import OnlineIPO
from nashalign.algorithms.registry import register


@register
@dataclass(frozen=True)
class NashProx(ProxCentre, OnlineIPO):
    """Online-IPO gradient steps on the prox game of strength ``tau`` toward ``c_k = mix_{beta/tau}(pi_k, mu)``."""

    name = "nash_prox"
    reference = "Tiapkin et al., 'Proximal Point Nash Learning from Human Feedback' (Nash-MP / Nash Prox), arXiv 2505.19731."
    beta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_every()
        b = float(self.beta)
        if not (0.0 <= b <= self.tau):
            raise ValueError(
                f"nash_prox: beta (the target's KL strength toward mu) must be in [0, tau] = [0, {self.tau}], got "
                f"{self.beta!r}; tau = beta + 1/eta_prox is the strength of each prox game."
            )
        object.__setattr__(self, "beta", b)

    def centre_ref_weight(self) -> float:
        return self.beta / self.tau

    @property
    def target_tau(self) -> float:
        return self.beta

    def init(self, logp0, logmu) -> State:
        return State(0, logp0, logmu, {"ref": logmu} if self.beta > 0 else {})

    def update(self, state: State, signal, phase: int = 0) -> State:
        # The centre is 0 wherever pi_k is (w = 0): read it as 0 off the support of pi_t, so the step's
        # log(pi_t / c_k), masked there anyway, never evaluates -inf - (-inf).
        safe = _xp.where(_xp.exp(state.logp) > 0, state.logmu, _xp.zeros_like(state.logmu))
        nxt = super().update(State(state.t, state.logp, safe, state.memory), signal, phase)
        return State(nxt.t, nxt.logp, state.logmu if nxt.logmu is safe else nxt.logmu, nxt.memory)

    def accept(self, state: State, logp_new, phase: int = 0) -> State:
        return self.recentre(State(state.t + 1, logp_new, state.logmu, state.memory))
