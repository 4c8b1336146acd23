"""Last-iterate convergence to the *unregularised* minimax winner by the proximal-point method.

COMAL (Liu et al. 2024) and MPO (Wang et al. 2024) solve a sequence of KL-regularised games whose
reference ("magnet") is the previous solution (SPEC.md section 10 and 12(f))::

    mu_{k+1} = pi*_tau(game with reference mu_k),

and the magnets converge to a Nash equilibrium of the original game for any fixed ``tau > 0``.  Each inner
problem is solved inexactly by a few extragradient (EGPO) steps; everything stays in log space, because
off-support probabilities fall geometrically and would underflow (SPEC.md section 11, note 1).

The iterates converge linearly once the support is found, but the rate depends on the game: a context whose
equilibrium puts very little mass (~1e-2) on some response can stall near exploitability 1e-3 for thousands of
outer steps (the inner solves are inexact).  ``converged`` says whether ``tol`` was reached; for an exact answer
use the LP, :func:`nashalign.solve_nash`.  With
``polish=True`` every check also tries the float64 *support polish* of :func:`nashalign.solve_nash`
on the contexts that are close: read the support off the iterate and solve the equalising linear system
``(A pi)(y) = 0 on S, pi = 0 off S, 1^T pi = 1`` with ``A = (P - P^T)/2``.  Where the support is right this is
the exact equilibrium (exploitability ~1e-16); where it is wrong the candidate is rejected (negative mass, or no
better than the iterate) and the proximal iterations go on.  A context is retried only after its
exploitability fell threefold since its last attempt, so a support that cannot yet be read costs little.  The
polish is off by default: it finishes small games (n <= ~30) in a fraction of the iterations, but for n >= 100
at exploitability ~1e-2 the support is rarely identifiable and the linear solves cost more than they save.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nashalign import _xp
from nashalign._validation import check_bool, check_int, check_positive
from nashalign.algorithms.comal import COMAL
from nashalign.equilibrium import _expl_skew, _skew, _support_polish
from nashalign.game import PreferenceGame
from nashalign.metrics import as_game, expl_logp
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
    polished: int = 0
    """Number of contexts whose answer is the float64 support polish (exact on its support) rather than the iterate."""


def solve_minimax(
    game: PreferenceGame,
    *,
    tau: float = 0.05,
    eta: float = 4.0,
    inner_steps: int = 10,
    max_outer: int = 10_000,
    tol: float = 1e-6,
    check_every: int = 10,
    backend: str = "numpy",
    device: Any = None,
    dtype: Any = None,
    polish: bool = False,
    polish_below: float = 1e-2,
) -> MinimaxResult:
    """Minimax winner of every context by the proximal point method with EGPO inner steps.

    Outer step ``k``: run ``inner_steps`` EGPO steps on the game regularised toward the magnet
    ``mu_k`` (log space), then set ``mu_{k+1}`` to the result.  Stops when the exploitability
    ``max_y P(y > pi) - 1/2`` of every context is below ``tol``.

    Args:
        game: the preference game.
        tau: proximal strength ``> 0`` (smaller converges faster per outer step but needs more inner steps).
        eta: EGPO step (``eta * tau <= 1``; ``eta * tau`` near 0.2 worked best on random games, and
            ``eta * tau > 0.5`` made the inexact inner solves cycle).
        inner_steps: EGPO iterations per outer step.
        max_outer: outer-step budget.
        tol: target exploitability.
        check_every: outer steps between exploitability checks (each costs one matvec).
        backend: as in :func:`nashalign.solve`.
        device: as in :func:`nashalign.solve`.
        dtype: as in :func:`nashalign.solve`.
        polish: at every check, try the float64 support polish (module docstring) on the contexts whose
            exploitability is below ``polish_below`` but not yet below ``tol`` (and fell threefold since the
            context's last attempt); a context whose polished policy reaches ``tol`` is finished with it.
        polish_below: exploitability under which the iterate's support is trusted enough to try the polish.

    Returns:
        :class:`MinimaxResult` (``policy`` as probabilities, ``(n,)`` or ``(C, n)``).
    """
    tau = check_positive(tau, "tau", hint="The proximal point method needs tau > 0.")
    check_positive(tol, "tol")
    check_positive(polish_below, "polish_below")
    inner_steps = check_int(inner_steps, "inner_steps", 1)
    max_outer = check_int(max_outer, "max_outer", 0)
    check_every = check_int(check_every, "check_every", 1)
    polish = check_bool(polish, "polish")
    g = as_game(game).to(backend, device=device, dtype=dtype)
    alg = COMAL(eta=eta, tau=tau, every=inner_steps)  # the registered prox-point rule, one definition
    P = g.P
    logp = g.log_ref
    t0 = time.perf_counter()
    C = g.num_contexts
    done = np.zeros(C, dtype=bool)  # contexts finished by the polish
    last_try = np.full(C, np.inf)  # exploitability at each context's last polish attempt
    exact = np.zeros((C, g.num_responses))  # their polished policies (float64)
    st = alg.init(logp, logp)  # the first centre is the start
    A = None
    k = 0

    def check() -> Any:
        """Exploitability of the current answer per context; polishes the contexts that are close."""
        nonlocal A
        expl = _xp.to_numpy(expl_logp(P, logp)).astype(np.float64)
        if polish and g.num_responses > 1:
            todo = np.flatnonzero(~done & (expl < polish_below) & ~(expl < tol) & (expl < last_try / 3))
            if todo.size:
                last_try[todo] = expl[todo]
                if A is None:
                    A = _skew(P)
                pi = np.asarray(_xp.to_numpy(_xp.exp(logp)), dtype=np.float64)[todo]
                cand = _support_polish(A[todo], pi / pi.sum(-1, keepdims=True))
                e = _expl_skew(A[todo], cand)
                ok = e < tol
                exact[todo[ok]] = cand[ok]
                done[todo[ok]] = True
        if done.any():
            expl[done] = _expl_skew(A[done], exact[done])
        return expl

    expl = check()
    converged = bool(np.max(expl) < tol)
    while not converged and k < int(max_outer):
        k += 1
        for _ in range(int(inner_steps)):  # COMAL resets its centre to the iterate after every inner_steps
            for phase in range(2):
                st = alg.update(st, exact_signal(P, alg.opponents(st, phase)), phase)
        logp = st.logp
        if k % check_every == 0 or k == int(max_outer):
            expl = check()
            converged = bool(np.max(expl) < tol)
    pi = _xp.exp(logp)
    if done.any():
        pi = _xp.where(_xp.like(done[:, None], pi) > 0, _xp.like(exact, pi), pi)
    return MinimaxResult(
        g.unbatch(pi),
        g.unbatch(_xp.like(expl, pi)),
        k,
        k * int(inner_steps),
        time.perf_counter() - t0,
        converged,
        int(done.sum()),
    )
