"""Tabular solvers: nashalign's exact batched steps against cvxpy, nashpy and OpenSpiel on the same random games.

Three measurements on random preference games (``nashalign.games.random_game``: C contexts x n responses,
reference ``mu = softmax(N(0, 1))``):

(a) throughput of the exact steps: iterations per second and the bandwidth they reach (bytes of ``P``
    read per second; one ``(C, n, n)`` read per matvec), numpy (blocked over contexts by default, one block,
    and mixed precision with P in float32) vs torch CPU (vs torch CUDA), against the machine's measured
    memory bandwidth;
(b) time to ``max_c KL(pi*_tau || pi) < 1e-8`` for the regularised equilibrium (tau = 0.1), EGPO and the
    best other last-iterate rule (OMWU/OMD) batched over all contexts, against cvxpy (Clarabel, tight
    tolerances) solving the exponential-cone program game by game, both verified against a reference;
(c) time to exploitability < 1e-6 for the unregularised minimax winner: nashalign's proximal-point
    method (``prox.solve_minimax``) and its LP (``equilibrium.solve_nash``) against nashpy (linear program,
    Lemke-Howson) and OpenSpiel's zero-sum LP.

Peers solve one game at a time; they are timed on a subsample of contexts and extrapolated linearly to C
(stated in the table).  Prints a markdown table last and writes ``benchmarks/results/tabular-<machine>.json``
and ``.md``.  ``--quick`` runs a grid that finishes in about a minute.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import nashalign  # noqa: E402
from nashalign.algorithms import get_algorithm  # noqa: E402
from nashalign.equilibrium import solve_nash  # noqa: E402
from nashalign.game import PreferenceGame  # noqa: E402
from nashalign.games import random_game  # noqa: E402
from nashalign.metrics import kl_logp, reg_expl_logp  # noqa: E402
from nashalign.prox import solve_minimax  # noqa: E402
from nashalign.solve import exact_signal  # noqa: E402

TAU = 0.1
KL_TARGET = 1e-8
EXPL_TARGET = 1e-6
#: Matvecs (reads of P) per iteration of each exact rule in nashalign's driver (OMWU reuses last
#: iteration's P pi_t as its P pi_{t-1}).
MATVECS = {"egpo": 2, "omwu": 1, "omd": 1}
ETA_GRID = {"egpo": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10), "omwu": (0.5, 1, 2, 3, 4, 5), "omd": (0.5, 1, 1.5, 2)}
#: Games per size that the one-by-one peers are timed on (then extrapolated to C).
PEER_GAMES = {10: 20, 100: 10, 1000: 2}
#: Proximal point settings for (c) (chosen on a small grid of tau, eta, inner steps; see the README).
PROX = {"tau": 0.05, "eta": 4.0, "inner_steps": 10}


# ----------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_game(n: int, C: int, seed: int, ref: Any = "random") -> PreferenceGame:
    return random_game(n, num_contexts=C, seed=seed, ref=ref)


def subgame(g: PreferenceGame, idx: np.ndarray) -> PreferenceGame:
    return PreferenceGame(np.asarray(g.P)[idx], ref=np.asarray(g.ref)[idx])


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def backends(device: str) -> list[dict[str, Any]]:
    """The exact solvers' configurations: a label and the keyword arguments of ``nashalign.solve``.

    * ``numpy f64``: the default (``context_block="auto"``: blocked over contexts when P > 16 MiB);
    * ``numpy f64 one block``: ``context_block=None``, every step over all C contexts (the pre-blocking
      driver; measured only where ``auto`` blocks);
    * ``numpy f64, P f32``: mixed precision, ``P`` stored in float32 (``p_dtype``; the game is converted once,
      outside the timing, as a user storing P that way would), log-policies, updates and metrics float64;
    * ``torch cpu f64`` (and with ``--device cuda``: CUDA float64, CUDA float32, CUDA float64 with P f32).
    """
    import torch

    out = [
        {"label": "numpy f64", "kw": {"backend": "numpy"}},
        {"label": "numpy f64 one block", "kw": {"backend": "numpy", "context_block": None}, "only_if_blocked": True},
        {"label": "numpy f64, P f32", "kw": {"backend": "numpy", "p_dtype": np.float32}},
        {"label": "torch cpu f64", "kw": {"backend": "torch", "device": "cpu", "dtype": torch.float64}},
    ]
    if device == "cuda":
        if cuda_available():
            out += [
                {"label": "torch cuda f64", "kw": {"backend": "torch", "device": "cuda", "dtype": torch.float64}},
                {"label": "torch cuda f32", "kw": {"backend": "torch", "device": "cuda", "dtype": torch.float32}},
                {"label": "torch cuda f64, P f32", "kw": {
                    "backend": "torch", "device": "cuda", "dtype": torch.float64, "p_dtype": torch.float32}},
            ]
        else:
            log("no CUDA device: skipping the torch CUDA columns")
    return out


def auto_blocks(g: PreferenceGame) -> bool:
    """Whether ``context_block="auto"`` blocks this float64 game (see ``nashalign.solve.BLOCK_MIN_BYTES``)."""
    import importlib

    S = importlib.import_module("nashalign.solve")
    return g.num_contexts > 1 and np.asarray(g.P).nbytes > S.BLOCK_MIN_BYTES


def prepared(g: PreferenceGame, spec: dict[str, Any]) -> PreferenceGame:
    """The game as a ``spec`` run takes it: stored with P in float32 for the mixed-precision runs."""
    if spec["kw"].get("p_dtype") is np.float32:
        return g.to("numpy", p_dtype=np.float32)
    return g


def sync_kw(kw: dict[str, Any]):
    return sync_for(kw.get("device"))


def sync_for(dev: Any):
    if dev == "cuda":
        import torch

        return torch.cuda.synchronize
    return None


class _TimeUp(Exception):
    pass


def _alarm(signum, frame):
    raise _TimeUp


def run_capped(fn, args: tuple, timeout: float) -> dict[str, Any]:
    """``fn(*args)`` under a SIGALRM cap: its dict, or ``{"dnf": True}`` past ``timeout`` seconds.

    In-process on purpose: forking after Clarabel/HiGHS have started their thread pools deadlocks the child.
    Python-level loops (Lemke-Howson, OpenSpiel's model building) stop at the alarm; a call inside C code
    stops when it returns to Python.
    """
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    except _TimeUp:
        return {"dnf": True}
    except Exception as e:  # report any peer failure and go on
        return {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def expl(P: np.ndarray, pi: np.ndarray) -> float:
    """``max_y P(y > pi) - 1/2`` of one game."""
    return float(np.max(P @ pi) - 0.5)


def clean(x: Any) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64).ravel(), 0.0, None)
    return x / x.sum()


# ----------------------------------------------------------------------------------------------- bandwidth
def measure_bandwidth(gib: float = 1.0) -> dict[str, float]:
    """Memory bandwidth of this machine, best of 3 (GB/s = 1e9 bytes/s), on arrays of ``gib`` GiB."""
    import torch

    n = int(gib * 2**30 / 8)
    a = np.full(n, 1.0)
    b = np.empty_like(a)
    h = n // 2
    out: dict[str, float] = {"array_gib": gib}
    t, _ = common.best_of(lambda: np.copyto(b, a))
    out["numpy_copy_read_write"] = 2 * a.nbytes / t / 1e9
    t, _ = common.best_of(lambda: a[:h] @ b[:h])  # BLAS ddot: reads both halves once
    out["blas_dot_read"] = a.nbytes / t / 1e9
    ta = torch.from_numpy(a)
    t, _ = common.best_of(lambda: ta.sum())
    out["torch_sum_read"] = a.nbytes / t / 1e9
    out["read_best"] = max(out["blas_dot_read"], out["torch_sum_read"])
    return {k: round(v, 2) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------- (a)
def run_solve(g, alg: str, eta: float, steps: int, kw: dict[str, Any]):
    return nashalign.solve(g, alg, eta=eta, tau=TAU, steps=steps, record_every=steps, target=None, **kw)


def time_solve(g, alg: str, eta: float, steps: int, kw: dict[str, Any], repeat: int = 3) -> float:
    t, _ = common.best_of(lambda: run_solve(g, alg, eta, steps, kw), repeat, sync_kw(kw))
    return t


def p_itemsize(kw: dict[str, Any]) -> int:
    """Bytes per entry of P as the run stores it."""
    import torch

    dt = kw.get("p_dtype") or kw.get("dtype")
    return 4 if dt in (np.float32, torch.float32) else 8


def throughput(g, spec: dict[str, Any], alg: str, repeat: int) -> dict[str, Any]:
    """Seconds per iteration as the slope between a short and a long run (setup and recording cancel)."""
    kw = spec["kw"]
    probe = time_solve(g, alg, 1.0, 4, kw, repeat=1)
    steps = int(np.clip(0.25 / max(probe / 4, 1e-6), 8, 2000))
    t1 = time_solve(g, alg, 1.0, steps, kw, repeat)
    t2 = time_solve(g, alg, 1.0, 3 * steps, kw, repeat)
    per_it = max(t2 - t1, 1e-12) / (2 * steps)
    nbytes = np.asarray(_xp_numpy(g.P)).size * p_itemsize(kw)
    return {
        "backend": spec["label"],
        "algorithm": alg,
        "context_block": run_solve(g, alg, 1.0, 1, kw).settings["context_block"],
        "steps": [steps, 3 * steps],
        "seconds_per_iteration": per_it,
        "iterations_per_second": 1.0 / per_it,
        "matvecs_per_iteration": MATVECS[alg],
        "bandwidth_gbs": MATVECS[alg] * nbytes / per_it / 1e9,
    }


def _xp_numpy(x: Any) -> np.ndarray:
    return np.asarray(nashalign._xp.to_numpy(x))


# ----------------------------------------------------------------------------------------------- (b)
def reference(g: PreferenceGame) -> tuple[np.ndarray, float]:
    """High-precision ``log pi*_tau``: EGPO (eta = 2) run to its float64 fixed point.

    Certified by the regularised exploitability ``tau KL(pi || BR_tau(pi))`` of every context (returned);
    cross-checked against cvxpy on the peer subsample in :func:`bench_regularized`.
    """
    r = nashalign.solve(g, "egpo", eta=2.0, tau=TAU, steps=20_000, tol=1e-26, record_every=5, target=None)
    pi = np.asarray(r.last).reshape(g.num_contexts, g.num_responses)
    with np.errstate(divide="ignore"):
        lp = np.log(pi)
    cert = float(np.max(reg_expl_logp(np.asarray(g.P), lp, np.asarray(g.log_ref), TAU)))
    return lp, cert


def iterations_to_kl(g: PreferenceGame, ref_logp: np.ndarray, alg: str, eta: float, max_it: int = 3000) -> int | None:
    """First iteration at which ``max_c KL(ref || pi_t) < KL_TARGET`` (None if never within ``max_it``)."""
    a = get_algorithm(alg, eta=eta, tau=TAU)
    P = np.asarray(g.P)
    st = a.init(np.asarray(g.log_ref), np.asarray(g.log_ref))
    for it in range(1, max_it + 1):
        for ph in range(a.phases):
            st = a.update(st, exact_signal(P, a.opponents(st, ph)), ph)
        with np.errstate(all="ignore"):
            kl = float(np.max(kl_logp(ref_logp, st.logp)))
        if kl < KL_TARGET:
            return it
        if not np.isfinite(kl) or kl > 1e3:
            return None
    return None


def tune_eta(n: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Step sizes per rule ranked by reads of P to KL < 1e-8 on separate calibration games (other seed; 50
    contexts, 5 for n = 1000); the benchmark uses the best one that converges on its own games."""
    gc = make_game(n, 50 if n <= 100 else 5, seed + 10_000)
    ref_c, _ = reference(gc)
    out = {}
    for alg, grid in ETA_GRID.items():
        cands = []
        for eta in grid:
            it = iterations_to_kl(gc, ref_c, alg, float(eta), max_it=1500)
            if it is not None:
                cands.append({"eta": float(eta), "iterations": it, "matvecs": it * MATVECS[alg]})
        out[alg] = sorted(cands, key=lambda d: (d["matvecs"], d["eta"]))
    return out


_EXP_CACHE: dict[int, Any] = {}
_TUNED: dict[int, Any] = {}


def cvxpy_exp_solve(A: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """SPEC.md 1(b): ``min KL(pi||mu) + LSE(log mu + A pi / tau)`` on the simplex, cvxpy + Clarabel, tight tolerances.

    For n <= 128 the problem is a DPP problem compiled once per n and re-solved per game (cvxpy's fastest way to
    solve many same-sized problems); above that it is built per game.
    """
    import cvxpy as cp

    n = A.shape[0]
    opts = {"solver": "CLARABEL", "tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "tol_ktratio": 1e-8}
    if n <= 128:
        if n not in _EXP_CACHE:
            B, m, lm = cp.Parameter((n, n)), cp.Parameter(n, nonneg=True), cp.Parameter(n)
            x = cp.Variable(n, nonneg=True)
            prob = cp.Problem(cp.Minimize(cp.sum(cp.rel_entr(x, m)) + cp.log_sum_exp(lm + B @ x)), [cp.sum(x) == 1])
            _EXP_CACHE[n] = (prob, B, m, lm, x)
        prob, B, m, lm, x = _EXP_CACHE[n]
        B.value, m.value, lm.value = A / TAU, mu, np.log(mu)
    else:
        x = cp.Variable(n, nonneg=True)
        obj = cp.sum(cp.rel_entr(x, mu)) + cp.log_sum_exp(np.log(mu) + (A / TAU) @ x)
        prob = cp.Problem(cp.Minimize(obj), [cp.sum(x) == 1])
    prob.solve(**opts)
    return clean(x.value)


def cvxpy_games(g: PreferenceGame, ref_logp: np.ndarray, k: int) -> dict[str, Any]:
    P, mu = np.asarray(g.P), np.asarray(g.ref)
    A = P - 0.5
    first = None
    if g.num_responses <= 128 and g.num_responses not in _EXP_CACHE:
        t0 = time.perf_counter()
        cvxpy_exp_solve(A[0], mu[0])  # compiles the DPP problem: a one-time cost per n, reported apart
        first = time.perf_counter() - t0
    times, kls = [], []
    for c in range(k):
        t0 = time.perf_counter()
        x = cvxpy_exp_solve(A[c], mu[c])
        times.append(time.perf_counter() - t0)
        with np.errstate(divide="ignore"):
            kls.append(float(kl_logp(ref_logp[c : c + 1], np.log(x)[None])[0]))
    return {"games_timed": k, "first_call_s": first, "per_game_s": float(np.mean(times)), "kl_max": max(kls)}


def bench_regularized(g: PreferenceGame, n: int, C: int, seed: int, bks, repeat: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ref_logp, cert = reference(g)
    row: dict[str, Any] = {"n": n, "C": C, "reference_reg_expl_max": cert, "reference_seconds": time.perf_counter() - t0}
    if n not in _TUNED:
        _TUNED[n] = tune_eta(n, seed)
    tuned = _TUNED[n]
    row["tuned"] = tuned
    others = [a for a in ("omwu", "omd") if tuned.get(a)]
    best_other = min(others, key=lambda a: tuned[a][0]["matvecs"]) if others else None
    row["best_other"] = best_other
    runs = {}
    for alg in ["egpo"] + ([best_other] if best_other else []):
        T, eta = None, None
        for cand in tuned.get(alg, []):  # the best calibrated eta that also converges on these games
            eta = cand["eta"]
            T = iterations_to_kl(g, ref_logp, alg, eta)
            if T is not None:
                break
        if T is None:
            runs[alg] = {"eta": eta, "iterations": None}
            continue
        for spec in bks:
            kw = spec["kw"]
            if alg != "egpo" and spec["label"] != "numpy f64":
                continue
            if spec.get("only_if_blocked") and not auto_blocks(g):
                continue
            gs = prepared(g, spec)
            Ts = T
            while True:  # equal accuracy: a run that misses the target (mixed precision) gets more iterations
                r = run_solve(gs, alg, eta, Ts, kw)
                with np.errstate(divide="ignore"):
                    lp = np.log(_xp_numpy(r.last).astype(np.float64).reshape(C, n))
                kl = float(np.max(kl_logp(ref_logp, lp)))
                if kl < KL_TARGET or Ts >= T + 5:
                    break
                Ts += 1
            t = time_solve(gs, alg, eta, Ts, kw, repeat)
            runs[f"{alg} {spec['label']}"] = {
                "eta": eta, "iterations": Ts, "seconds": t, "kl_max": kl, "context_block": r.settings["context_block"],
                "p_dtype": r.settings["p_dtype"], "load_average": common.load_average(),
            }
    row["nashalign"] = runs
    k = min(C, PEER_GAMES[n])
    cv = cvxpy_games(g, ref_logp, k)
    cv["extrapolated_s"] = cv["per_game_s"] * C
    row["cvxpy"] = cv
    return row


# ----------------------------------------------------------------------------------------------- (c)
def _peer_nashpy_lp(A: np.ndarray) -> dict[str, Any]:
    import nashpy

    t0 = time.perf_counter()
    x = nashpy.linalg.minimax.linear_program(A)  # one LP (the row player's); Game.linear_program() solves two
    return {"seconds": time.perf_counter() - t0, "pi": clean(x)}


def _peer_nashpy_lh(A: np.ndarray) -> dict[str, Any]:
    import warnings

    import nashpy

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, _ = nashpy.Game(A, -A).lemke_howson(initial_dropped_label=0)
    return {"seconds": time.perf_counter() - t0, "pi": clean(x)}


def _peer_openspiel(A: np.ndarray) -> dict[str, Any]:
    import pyspiel
    from open_spiel.python.algorithms import lp_solver

    t0 = time.perf_counter()
    res = lp_solver.solve_zero_sum_matrix_game(pyspiel.create_matrix_game(A, -A))
    return {"seconds": time.perf_counter() - t0, "pi": clean(res[0])}


def _peer_solve_nash(P: np.ndarray) -> dict[str, Any]:
    t0 = time.perf_counter()
    x = solve_nash(PreferenceGame(P), check=False)
    return {"seconds": time.perf_counter() - t0, "pi": clean(x)}


def peer_games(fn, mats: list[np.ndarray], Ps: list[np.ndarray], timeout: float) -> dict[str, Any]:
    """Time ``fn`` game by game (each in a capped child); stop at the first failure or time-out."""
    times, ex = [], []
    for M, P in zip(mats, Ps):
        out = run_capped(fn, (M,), timeout)
        if out.get("dnf"):
            return {"status": f"did not finish (> {timeout:g} s per game)", "games_timed": len(times)}
        if "error" in out:
            return {"status": "error: " + out["error"], "games_timed": len(times)}
        times.append(out["seconds"])
        ex.append(expl(P, out["pi"]))
    return {"status": "ok", "games_timed": len(times), "per_game_s": float(np.mean(times)), "expl_max": float(max(ex))}


def available(module: str) -> str | None:
    try:
        __import__(module)
    except Exception as e:  # report the exact import error
        return f"{type(e).__name__}: {e}"
    return None


def nashpy_peers(A: list[np.ndarray], Ps: list[np.ndarray], n: int, peer_timeout: float, skip_lh_from: list) -> dict[str, Any]:
    """nashpy's LP and Lemke-Howson on the games; "not installed" (never a time-out) without nashpy.

    Lemke-Howson is skipped for every ``n`` at or above one where it did not finish in time
    (``skip_lh_from``); an error other than a time-out does not skip larger games.
    """
    err = available("nashpy")
    if err:
        return {name: {"status": "not installed: " + err, "games_timed": 0} for name in ("nashpy LP", "nashpy Lemke-Howson")}
    out = {"nashpy LP": peer_games(_peer_nashpy_lp, A, Ps, 10 * peer_timeout)}
    if any(n >= m for m in skip_lh_from):
        out["nashpy Lemke-Howson"] = {"status": f"did not finish (> {peer_timeout:g} s at n = {min(skip_lh_from)})", "games_timed": 0}
    else:
        out["nashpy Lemke-Howson"] = peer_games(_peer_nashpy_lh, A, Ps, peer_timeout)
        if out["nashpy Lemke-Howson"]["status"].startswith("did not finish"):
            skip_lh_from.append(n)
    return out


def bench_minimax(g: PreferenceGame, n: int, C: int, budget: float, peer_timeout: float, skip_lh_from: list) -> dict[str, Any]:
    P = np.asarray(g.P)
    row: dict[str, Any] = {"n": n, "C": C}
    # nashalign, proximal point (batched over all contexts): time to max expl < eps, each from scratch, capped.
    probe = solve_minimax(g, **PROX, max_outer=10, tol=1e-300, check_every=10)
    per_outer = probe.seconds / 10
    prox = {"settings": PROX, "seconds_per_outer_step": per_outer, "to": {}}
    for eps in (1e-2, 1e-4, EXPL_TARGET):
        cap = max(10, int(budget / per_outer))
        r = solve_minimax(g, **PROX, max_outer=cap, tol=eps, check_every=10)
        e = np.atleast_1d(np.asarray(r.exploitability))
        prox["to"][f"{eps:g}"] = {
            "converged": bool(r.converged), "seconds": r.seconds, "outer_steps": r.outer_steps,
            "expl_max": float(e.max()), "expl_median": float(np.median(e)), "frac_below": float(np.mean(e < eps)),
        }
        if not r.converged:
            break
    row["prox"] = prox
    # one-by-one solvers on a subsample of k games, extrapolated to C
    k = min(C, PEER_GAMES[n])
    A = [P[c] - 0.5 for c in range(k)]
    Ps = [P[c] for c in range(k)]
    solve_nash(PreferenceGame(P[:1]), check=False)  # compile cvxpy's DPP LP once (n <= 128), outside the timing
    peers: dict[str, Any] = {"nashalign solve_nash": peer_games(_peer_solve_nash, Ps, Ps, 10 * peer_timeout)}
    peers.update(nashpy_peers(A, Ps, n, peer_timeout, skip_lh_from))
    err = available("pyspiel")
    peers["OpenSpiel LP"] = {"status": "not installed: " + err} if err else peer_games(_peer_openspiel, A, Ps, 10 * peer_timeout)
    for p in peers.values():
        if "per_game_s" in p:
            p["extrapolated_s"] = p["per_game_s"] * C
    row["peers"] = peers
    return row


# ----------------------------------------------------------------------------------------------- tables
def sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def tables(rec: dict[str, Any]) -> str:
    bw = rec["bandwidth"]
    out = [f"Machine: {rec['machine']['cpu']}, {rec['machine']['cores']} cores, {rec['machine']['memory_gib']} GiB; "
           f"measured read bandwidth {bw['read_best']} GB/s (copy {bw['numpy_copy_read_write']} GB/s r+w); "
           f"load average {rec['load_average_start']}; torch threads {rec['machine']['torch_threads']}; "
           f"CUDA: {rec['machine']['cuda'].get('name', 'no CUDA device')}."]
    if rec["throughput"]:
        out += ["", "**(a) Exact steps: throughput** (EGPO = 2 reads of P per iteration, OMWU = 1; GB/s of P read, "
                "from cache for blocked runs and P that fits in cache, hence above the memory bandwidth; block = "
                "contexts per block, - = one block)", ""]
        rows = []
        for r in rec["throughput"]:
            if "skipped" in r:
                rows.append({"C x n": f"{r['C']} x {r['n']}", "backend": r["skipped"]})
                continue
            for m in r["runs"]:
                rows.append({
                    "C x n": f"{r['C']} x {r['n']}", "P (MB)": f"{r['P_mb']:.3g}", "backend": m["backend"], "rule": m["algorithm"],
                    "block": m.get("context_block") or "-",
                    "it/s": f"{m['iterations_per_second']:.4g}", "GB/s": f"{m['bandwidth_gbs']:.3g}",
                    "% of machine": f"{100 * m['bandwidth_gbs'] / bw['read_best']:.0f}%",
                })
        out.append(common.markdown_table(rows, ["C x n", "P (MB)", "backend", "rule", "block", "it/s", "GB/s", "% of machine"]))
    if rec["regularized"]:
        out += ["", f"**(b) Regularised equilibrium (tau = {TAU}): time to max KL(pi* || pi) < {KL_TARGET:g}**, "
                "nashalign batched over all C vs cvxpy+Clarabel game by game (timed on k games, x C/k)", ""]
        rows = []
        for r in rec["regularized"]:
            if "skipped" in r:
                rows.append({"C x n": f"{r['C']} x {r['n']}", "nashalign": r["skipped"]})
                continue
            cv = r["cvxpy"]
            for key, m in r["nashalign"].items():
                if m.get("iterations") is None:
                    rows.append({"C x n": f"{r['C']} x {r['n']}", "nashalign": f"{key}: no convergence"})
                    continue
                block = m.get("context_block")
                rows.append({
                    "C x n": f"{r['C']} x {r['n']}", "nashalign": key + (f" (blocks of {block})" if block else ""),
                    "eta, its": f"{m['eta']:g}, {m['iterations']}", "time": common.fmt_s(m["seconds"]),
                    "KL": sci(m["kl_max"]) + ("" if m["kl_max"] < KL_TARGET else " (> target)"),
                    "cvxpy (k games)": f"{common.fmt_s(cv['extrapolated_s'])} ({cv['games_timed']}; KL {sci(cv['kl_max'])})",
                    "speed-up": f"{cv['extrapolated_s'] / m['seconds']:.3g}x",
                })
        out.append(common.markdown_table(rows, ["C x n", "nashalign", "eta, its", "time", "KL", "cvxpy (k games)", "speed-up"]))
        out.append("")
        out.append("cvxpy's one-time DPP compile and first solve (n <= 128) is excluded: "
                   + ", ".join(f"n={r['n']}: {common.fmt_s(r['cvxpy']['first_call_s'])}" for r in rec["regularized"] if r.get("cvxpy", {}).get("first_call_s"))
                   + ". Reference: EGPO run to its float64 fixed point, certified by max tau KL(pi || BR_tau(pi)) = "
                   + ", ".join(sci(r["reference_reg_expl_max"]) for r in rec["regularized"] if "cvxpy" in r) + ".")
    if rec["minimax"]:
        out += ["", f"**(c) Minimax winner (tau = 0): time to exploitability < {EXPL_TARGET:g}** (one-by-one solvers timed on k games, x C/k; "
                f"ratio = peer time / nashalign's fastest time to the target: > 1 means nashalign is faster)", ""]
        rows = []
        for r in rec["minimax"]:
            if "skipped" in r:
                rows.append({"C x n": f"{r['C']} x {r['n']}", "solver": r["skipped"]})
                continue
            to = r["prox"]["to"]
            done = [e for e, v in to.items() if v["converged"]]
            last = list(to.items())[-1]
            prox_cell = ", ".join(f"<{e}: {common.fmt_s(to[e]['seconds'])}" for e in done)
            if not last[1]["converged"]:
                prox_cell += (f"{', ' if done else ''}<{last[0]}: did not finish in {common.fmt_s(last[1]['seconds'])} "
                              f"(max {sci(last[1]['expl_max'])}, median {sci(last[1]['expl_median'])})")
            times = {}
            if to.get(f"{EXPL_TARGET:g}", {}).get("converged"):
                times["prox"] = to[f"{EXPL_TARGET:g}"]["seconds"]
            sn = r["peers"]["nashalign solve_nash"]
            if sn.get("status") == "ok" and sn["expl_max"] < EXPL_TARGET:
                times["solve_nash"] = sn["extrapolated_s"]
            base = min(times.values()) if times else None
            rows.append({"C x n": f"{r['C']} x {r['n']}", "solver": "nashalign prox (batched)", "time": prox_cell, "ratio": "1x" if times.get("prox") == base and base else ""})
            for name, p in r["peers"].items():
                if p.get("status") != "ok":
                    rows.append({"C x n": f"{r['C']} x {r['n']}", "solver": name, "time": p.get("status")})
                    continue
                ok = p["expl_max"] < EXPL_TARGET
                rows.append({
                    "C x n": f"{r['C']} x {r['n']}", "solver": name,
                    "time": f"{common.fmt_s(p['extrapolated_s'])} ({p['games_timed']} games; expl {sci(p['expl_max'])}{'' if ok else ' > target'})",
                    "ratio": f"{p['extrapolated_s'] / base:.3g}x" if base else "-",
                })
        out.append(common.markdown_table(rows, ["C x n", "solver", "time", "ratio"]))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small grid (n in 10, 100; C in 1, 100): about a minute")
    ap.add_argument("--n", type=int, nargs="+", default=None, help="responses per context (default 10 100 1000)")
    ap.add_argument("--C", type=int, nargs="+", default=None, help="contexts (default 1 100 1000)")
    ap.add_argument("--parts", default="abc", help="which measurements: any of a, b, c (default abc)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda adds torch CUDA columns")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--repeat", type=int, default=3, help="timings are best of this many runs")
    ap.add_argument("--max-gb", type=float, default=2.0, help="skip sizes whose P (float64) exceeds this")
    ap.add_argument("--peer-timeout", type=float, default=20.0, help="Lemke-Howson cap per game (s); LPs get 10x")
    ap.add_argument("--prox-budget", type=float, default=20.0, help="cap per proximal-point run in (c), seconds")
    ap.add_argument("--seed", type=int, default=0)
    common.add_output_args(ap)
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    ns = args.n or ([10, 100] if args.quick else [10, 100, 1000])
    Cs = args.C or ([1, 100] if args.quick else [1, 100, 1000])
    if args.quick:
        args.peer_timeout = min(args.peer_timeout, 5.0)
        args.prox_budget = min(args.prox_budget, 2.0)
    machine = args.machine or common.machine_slug()
    rec = common.header("tabular", ["cvxpy", "clarabel", "nashpy", "open_spiel", "ecos"])
    rec["settings"] = {k: v for k, v in vars(args).items()}
    rec["settings"].update(tau=TAU, kl_target=KL_TARGET, expl_target=EXPL_TARGET, prox=PROX, peer_games=PEER_GAMES)
    err = available("pyspiel")
    rec["open_spiel_import_error"] = err
    if err:
        log(f"OpenSpiel unavailable ({err}); continuing without it")
    log(f"machine {machine}; load {common.load_average()}; measuring bandwidth")
    rec["bandwidth"] = measure_bandwidth()
    log(f"bandwidth {rec['bandwidth']}")
    bks = backends(args.device)
    rec["throughput"], rec["regularized"], rec["minimax"] = [], [], []
    skip_lh: list[int] = []
    t_start = time.perf_counter()
    for n in ns:
        for C in Cs:
            mb = C * n * n * 8 / 1e6
            if mb > args.max_gb * 1e3:
                skip = {"n": n, "C": C, "skipped": f"skipped: P would take {mb / 1e3:.3g} GB (> --max-gb {args.max_gb:g})"}
                for part, key in (("a", "throughput"), ("b", "regularized"), ("c", "minimax")):
                    if part in args.parts:
                        rec[key].append(skip)
                log(skip["skipped"])
                continue
            g = make_game(n, C, args.seed)
            if "a" in args.parts:
                log(f"(a) C={C} n={n}")
                runs = [
                    throughput(prepared(g, spec), spec, alg, args.repeat)
                    for spec in bks if auto_blocks(g) or not spec.get("only_if_blocked") for alg in ("egpo", "omwu")
                ]
                rec["throughput"].append({"n": n, "C": C, "P_mb": mb, "runs": runs})
            if "b" in args.parts:
                log(f"(b) C={C} n={n}")
                rec["regularized"].append(bench_regularized(g, n, C, args.seed, bks, args.repeat))
                log(f"    {rec['regularized'][-1]['nashalign']} cvxpy {rec['regularized'][-1]['cvxpy']}")
            if "c" in args.parts:
                log(f"(c) C={C} n={n}")
                g0 = make_game(n, C, args.seed, ref=None)
                rec["minimax"].append(bench_minimax(g0, n, C, args.prox_budget, args.peer_timeout, skip_lh))
                log(f"    prox {rec['minimax'][-1]['prox']['to']}")
            del g
    rec["total_seconds"] = time.perf_counter() - t_start
    md = tables(rec)
    if not args.no_write:
        js, mdp = common.write("tabular", machine, rec, md, publish=common.publishing(args))
        log(f"wrote {js} and {mdp}")
    print(md)


if __name__ == "__main__":
    main()
