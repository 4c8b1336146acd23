"""Deliberately naive reference implementations of every exact step (SPEC.md section 13).

One context at a time, one response at a time, plain Python floats and ``math``: no numpy broadcasting,
no shared code with :mod:`nashalign.algorithms`.  The batched library steps are checked against these
loops in ``test_contract.py``.  Policies are lists of log-probabilities (``-inf`` = probability 0).
"""

from __future__ import annotations

import math

NEG_INF = float("-inf")


def normalize(z: list[float]) -> list[float]:
    """``z - logsumexp(z)`` by hand."""
    top = max(z)
    total = sum(math.exp(v - top) for v in z if v != NEG_INF)
    lse = top + math.log(total)
    return [v - lse for v in z]


def win(P: list[list[float]], logq: list[float]) -> list[float]:
    """``P(y > q) = sum_{y'} q(y') P[y][y']`` for every response ``y``."""
    n = len(logq)
    return [sum(P[y][k] * math.exp(logq[k]) for k in range(n)) for y in range(n)]


def mix(logp: list[float], logmu: list[float], w: float) -> list[float]:
    """``log pi^{1-w} mu^w`` (unnormalised); ``w = 0`` is ``log pi`` exactly."""
    if w == 0:
        return list(logp)
    return [(1 - w) * a + w * b for a, b in zip(logp, logmu)]


def mirror(logp, logmu, signal, eta, tau):
    """``normalize((1 - eta tau) log pi + eta tau log mu + eta s)`` (SPEC.md 13, ``omd_reg``)."""
    anchor = mix(logp, logmu, eta * tau)
    return normalize([a + eta * s for a, s in zip(anchor, signal)])


def step_one_context(name: str, hp: dict, P, logp, logmu, memory: dict):
    """One iteration of ``name`` on one context; returns ``(logp_next, memory_next)``."""
    eta, tau = hp["eta"], hp.get("tau", 0.0)
    if name in ("mwu", "sppo", "spo", "dno", "omd", "inpo"):
        return mirror(logp, logmu, win(P, logp), eta, tau), {}
    if name == "nash_md":
        w = eta * tau if hp.get("mixture") is None else hp["mixture"]
        opp = normalize(mix(logp, logmu, w))
        return mirror(logp, logmu, win(P, opp), eta, tau), {}
    if name == "egpo":
        half = mirror(logp, logmu, win(P, logp), eta, tau)
        return mirror(logp, logmu, win(P, half), eta, tau), {}
    if name == "omwu":
        g, g_prev = win(P, logp), win(P, memory["prev"])
        return mirror(logp, logmu, [2 * a - b for a, b in zip(g, g_prev)], eta, tau), {"prev": list(logp)}
    if name == "nash_ema":
        beta = hp.get("beta", 0.1)
        new = mirror(logp, logmu, win(P, normalize(memory["ema"])), eta, tau)
        return new, {"ema": [(1 - beta) * e + beta * v for e, v in zip(memory["ema"], new)]}
    if name == "online_ipo":
        # theta <- theta - eta * 4 pi (e - E_pi e), e = log(pi/mu) - P(. > pi)/tau (SPEC.md section 4)
        n = len(logp)
        pi = [math.exp(v) for v in logp]
        w = win(P, logp)
        e = [(logp[y] - logmu[y] - w[y] / tau) if pi[y] > 0 else 0.0 for y in range(n)]
        mean_e = sum(pi[y] * e[y] for y in range(n))
        return normalize([logp[y] - eta * 4 * pi[y] * (e[y] - mean_e) for y in range(n)]), {}
    if name in ("mpo", "comal", "nash_prox", "onpo"):
        return _step_new(name, hp, P, logp, logmu, memory)
    if name == "apo":
        # the paper's two sequences: hat_{t+1} = normalize(log pi_t + eta P(. > pi_t)) (SPPO's proximal step),
        # pi_{t+1} = normalize((1 + alpha) hat_{t+1} - alpha hat_t), pi_1 = hat_1 (not the library's recursion)
        alpha = hp.get("alpha", 0.3)
        hat_new = mirror(logp, logmu, win(P, logp), eta, 0.0)
        if memory["hat"] is None:
            return hat_new, {"hat": hat_new}
        new = normalize([(1 + alpha) * a - alpha * b for a, b in zip(hat_new, memory["hat"])])
        return new, {"hat": hat_new}
    if name == "mnpo":
        lam, r = hp.get("lam", 0.5), eta * tau
        hist = [(1 - lam) * a + lam * b for a, b in zip(logp, memory["prev"])]
        anchor = [(1 - r) * h + r * m for h, m in zip(hist, logmu)]
        w = win(P, logp)
        return normalize([a + eta * v for a, v in zip(anchor, w)]), {"prev": list(logp)}
    if name == "rspo":
        tf = hp.get("tau_forward", 0.1)
        w = win(P, logp)
        z = [(1 - eta * tau) * logp[y] + eta * tau * logmu[y] + eta * tf * math.exp(logmu[y] - logp[y]) + eta * w[y]
             for y in range(len(logp))]
        return normalize(z), {}
    if name == "xpo":
        return xpo_reference(P, logp, logmu, tau, hp.get("alpha", 1e-3)), {}
    raise KeyError(name)


def ipo_grad_step(P, logp, logc, tau, lr):
    """One online-IPO gradient step toward the reference ``logc`` (SPEC.md 4), response by response."""
    n = len(logp)
    pi = [math.exp(v) for v in logp]
    w = win(P, logp)
    e = [(logp[y] - logc[y] - w[y] / tau) if pi[y] > 0 else 0.0 for y in range(n)]
    mean_e = sum(pi[y] * e[y] for y in range(n))
    return normalize([logp[y] - lr * 4 * pi[y] * (e[y] - mean_e) for y in range(n)])


def _step_new(name: str, hp: dict, P, logp, logmu, memory: dict):
    """SPEC.md 14: the prox-point rules keep their centre in ``memory["centre"]`` (starting at ``mu``) and a
    step counter; ONPO keeps the played policy in ``memory["played"]``."""
    eta, tau = hp["eta"], hp.get("tau", 0.0)
    if name == "onpo":
        played = mirror(logp, logmu, win(P, memory["played"]), eta, tau)  # pi_t from hat_{t-1} vs pi_{t-1}
        return mirror(logp, logmu, win(P, played), eta, tau), {"played": played}
    centre = memory.get("centre", list(logmu))
    if name == "mpo" or (name == "comal" and hp.get("inner") == "inpo"):
        new = mirror(logp, centre, win(P, logp), eta, tau)
    elif name == "comal":
        half = mirror(logp, centre, win(P, logp), eta, tau)
        new = mirror(logp, centre, win(P, half), eta, tau)
    else:
        new = ipo_grad_step(P, logp, centre, tau, eta)
    t = memory.get("t", 0) + 1
    if t % hp.get("every", 10) == 0:
        wgt = hp.get("beta", 0.0) / tau if name == "nash_prox" else 0.0
        centre = normalize(mix(new, logmu, wgt))
    return new, {"centre": centre, "t": t}


def xpo_reference(P, logp, logmu, tau: float, alpha: float) -> list[float]:
    """XPO's argmin by plain fixed-point iteration (the library uses Newton): with ``v = theta - log mu - s/tau``,
    ``theta_k = log mu_k + s_k/tau + E_pi_t v - (alpha/4)(1 - pi_k/pi_t(k))``, iterated to a fixed point."""
    n = len(logp)
    s = win(P, logp)
    pt = [math.exp(v) for v in logp]
    base = [logmu[y] + s[y] / tau for y in range(n)]
    theta = list(base)
    for _ in range(500):
        lp = normalize(theta)
        vbar = sum(pt[y] * (theta[y] - base[y]) for y in range(n))
        theta = [base[y] + vbar - alpha / 4 * (1 - math.exp(lp[y] - logp[y])) for y in range(n)]
    return normalize(theta)


def initial_memory(name: str, logp: list[float]) -> dict:
    if name == "apo":
        return {"hat": None}
    if name in ("omwu", "mnpo"):
        return {"prev": list(logp)}
    if name == "nash_ema":
        return {"ema": list(logp)}
    if name == "onpo":
        return {"played": list(logp)}
    return {}


def run(name: str, hp: dict, P, logp0, logmu, steps: int) -> list[list[float]]:
    """``steps`` iterations of the built-in rule ``name`` on every context of ``P`` (``C x n x n`` nested lists)."""
    return run_with(lambda *a: step_one_context(name, *a), lambda lp: initial_memory(name, lp), hp, P, logp0, logmu,
                    steps)


def run_with(step, init_memory, hp: dict, P, logp0, logmu, steps: int) -> list[list[float]]:
    """``steps`` iterations of the one-context ``step(hp, P, logp, logmu, memory)`` on every context, one by one."""
    out = []
    for c in range(len(P)):
        lp = [float(v) for v in logp0[c]]
        lm = [float(v) for v in logmu[c]]
        Pc = [[float(v) for v in row] for row in P[c]]
        mem = init_memory(lp)
        for _ in range(steps):
            lp, mem = step(hp, Pc, lp, lm, mem)
        out.append(lp)
    return out
