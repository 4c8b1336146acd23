"""Last-iterate convergence to the *unregularised* minimax winner by the proximal-point method.

COMAL (Liu et al. 2024) and MPO (Wang et al. 2024) solve a sequence of KL-regularised games whose
reference ("magnet") is the previous solution (SPEC.md section 10 and 12(f))::

    mu_{k+1} = pi*_tau(game with reference mu_k),

and the magnets converge to a Nash equilibrium of the original game for any fixed ``tau > 0``.  Each inner
problem is solved inexactly by a few extragradient (EGPO) steps; everything stays in log space, because
off-support probabilities fall geometrically and would underflow (SPEC.md section 11, note 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nashalign import _xp
from nashalign._validation import check_positive
from nashalign.algorithms.egpo import EGPO
from nashalign.game import PreferenceGame
from nashalign.metrics import expl_logp
from nashalign.solve import exact_signal


@dataclass
class MinimaxResult:
    """Result of :func:`solve_minimax`: the policy, its exploitability per context, and the work done."""

    policy: Any
    exploitability: Any
    outer_steps: int
    inner_steps: int
    seconds: float
    converged: bool


def solve_minimax(
    game: PreferenceGame,
    *,
    tau: float = 0.1,
    eta: float = 1.0,
    inner_steps: int = 10,
    max_outer: int = 10_000,
    tol: float = 1e-6,
    check_every: int = 10,
    backend: str = "numpy",
    device: Any = None,
    dtype: Any = None,
) -> MinimaxResult:
    """Minimax winner of every context by the proximal point method with EGPO inner steps.

    Outer step ``k``: run ``inner_steps`` EGPO steps on the game regularised toward the magnet
    ``mu_k`` (log space), then set ``mu_{k+1}`` to the result.  Stops when the exploitability
    ``max_y P(y > pi) - 1/2`` of every context is below ``tol``.

    Args:
        game: the preference game.
        tau: proximal strength ``> 0`` (smaller converges faster per outer step but needs more inner steps).
        eta: EGPO step (``eta * tau <= 1``).
        inner_steps: EGPO iterations per outer step.
        max_outer: outer-step budget.
        tol: target exploitability.
        check_every: outer steps between exploitability checks (each costs one matvec).
        backend, device, dtype: as in :func:`nashalign.solve`.

    Returns:
        :class:`MinimaxResult` (``policy`` as probabilities, ``(n,)`` or ``(C, n)``).
    """
    tau = check_positive(tau, "tau", hint="The proximal point method needs tau > 0.")
    check_positive(tol, "tol")
    g = game.to(backend, device=device, dtype=dtype)
    alg = EGPO(eta=eta, tau=tau)
    P = g.P
    logp = g.log_ref
    t0 = time.perf_counter()
    expl = expl_logp(P, logp)
    k = 0
    converged = False
    for k in range(1, int(max_outer) + 1):
        st = alg.init(logp, logp)  # magnet = the previous outer solution
        for _ in range(int(inner_steps)):
            for phase in range(2):
                st = alg.update(st, exact_signal(P, alg.opponents(st, phase)), phase)
        logp = st.logp
        if k % check_every == 0:
            expl = expl_logp(P, logp)
            if float(_xp.amax(expl, axis=-1)) < tol:
                converged = True
                break
    if not converged:
        expl = expl_logp(P, logp)
        converged = bool(float(_xp.amax(expl, axis=-1)) < tol)
    return MinimaxResult(
        g.unbatch(_xp.exp(logp)), g.unbatch(expl), k, k * int(inner_steps), time.perf_counter() - t0, converged
    )
