"""The policy-gradient form on SAMPLED responses (SPO, Nash-MD-PG): what the exact-enumeration tests cannot see.

Over an exact enumeration the pg loss is the KL-proximal objective and its minimiser is the step
(tests/algorithms/test_exactness.py).  On a sample it must stay a sensible estimate of that objective:

* its minimiser may not take probability away from every sampled response and hand it to responses
  nobody sampled (on a language model: invalid strings).  The old per-sample objective
  ``rho (log pi - a - eta s)`` had the per-sample minimiser ``rho = exp(eta s - 1)``, so it did exactly
  that; the fixed one is ``rho log rho - rho + 1 + rho (g - c)`` (:func:`nashalign.algorithms._losses.policy_gradient`);
* its gradient at ``pi = pi_t`` is an unbiased estimate of the exact step's gradient, with SPO's self-play
  win rates (whose self-comparison 1/2 shrinks them by ``(K - 1)/K``) as well as with independent opponents.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nashalign import PreferenceGame
from nashalign.algorithms import LossInputs, get_algorithm
from nashalign.estimators import estimate
from nashalign.policies import SoftmaxTable, exact_loss_inputs


def _game(n: int = 5, seed: int = 0) -> PreferenceGame:
    """A random game on ``n - 1`` responses plus a last response that loses to every other one."""
    rng = np.random.default_rng(seed)
    low = np.tril(rng.uniform(0.2, 0.8, size=(n, n)), -1)
    P = low + (1.0 - low.T) * np.triu(np.ones((n, n)), 1) + 0.5 * np.eye(n)
    P[-1, :-1], P[:-1, -1] = 0.0, 1.0
    return PreferenceGame(P, ref=np.full(n, 1.0 / n))


@pytest.mark.parametrize("name,tau", [("spo", 0.0), ("nash_md", 0.1)])
def test_sampled_pg_minimiser_does_not_move_mass_to_unsampled_responses(name, tau):
    """One row of 4 distinct sampled responses out of 5; the 5th (a loser, 2% mass) is not in the sample."""
    game = _game()
    pi_t = torch.tensor([0.3, 0.25, 0.25, 0.18, 0.02], dtype=torch.float64)
    alg = get_algorithm(name, eta=0.5, tau=tau, form="pg")
    resp = torch.tensor([[0, 1, 2, 3]])
    P = torch.as_tensor(game.P[0])
    signal = (P @ pi_t)[resp]  # exact win rates of the sampled responses
    anchor = pi_t.log()[resp]
    ref = torch.as_tensor(game.log_ref[0])[resp]
    table = SoftmaxTable(pi_t.log()[None]).double()
    opt = torch.optim.LBFGS(table.parameters(), lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = alg.loss(LossInputs(table.log_probs()[0][resp], anchor, ref, signal, None, anchor, 0)).loss
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    new = table.log_probs().exp()[0].detach()
    assert torch.isfinite(new).all()
    assert float(new[4]) < 0.04, new  # the old objective sent about 60% of the mass to the unsampled loser
    # and each sampled response moves by the step's own factor exp(eta (s - baseline)), not by exp(-1)
    assert float((new[:4] / pi_t[:4]).log().abs().max()) < 2 * 0.5, new


def _tabular_sampler(logp: torch.Tensor, generator: torch.Generator):
    def sample(opp, prompt_index, k):
        lq = logp if opp is None or opp.logq is None else torch.as_tensor(opp.logq)[0]
        probs = lq.exp().expand(len(prompt_index), -1)
        return torch.multinomial(probs, k, replacement=True, generator=generator).reshape(-1)

    return sample


@pytest.mark.parametrize("name,tau,estimator", [("spo", 0.0, "winrate"), ("nash_md", 0.2, "opponent")])
def test_sampled_pg_gradient_at_the_anchor_is_unbiased(name, tau, estimator):
    """Mean sampled gradient (many rows of K = 4 responses) = gradient of the exact enumerated loss."""
    n, K, B = 4, 4, 40000
    rng = np.random.default_rng(3)
    game = PreferenceGame(_game(n, seed=1).P[0], ref=rng.dirichlet(2 * np.ones(n)))
    alg = get_algorithm(name, eta=1.5, tau=tau, form="pg")
    logp_t = torch.log(torch.tensor(rng.dirichlet(2 * np.ones(n))))
    st = alg.init(logp_t[None].numpy(), game.log_ref)
    opps = alg.opponents(st)
    exact_signal = sum(o.coef * game.P[0] @ np.exp(o.logq[0]) for o in opps)[None]  # (1, n)

    table = SoftmaxTable(logp_t[None]).double()
    alg.loss(exact_loss_inputs(alg, st, exact_signal, table.log_probs())).loss.backward()
    g_exact = table.logits.grad.clone()

    P = torch.as_tensor(game.P[0])
    gen = torch.Generator().manual_seed(0)
    fb = estimate(
        estimator, opps, torch.zeros(B, dtype=torch.long), _tabular_sampler(logp_t, gen),
        lambda ctx, a, b: P[a, b], k=K, opponent_samples=1, pairwise_rows=False,
    )
    resp = fb.responses[fb.index]  # (B, K)
    ref = torch.as_tensor(game.log_ref[0])
    table.zero_grad()
    out = alg.loss(LossInputs(table.log_probs()[0][resp], logp_t[resp], ref[resp], fb.signal.double(), None,
                              logp_t[resp], 0))
    out.loss.backward()
    g_sampled = table.logits.grad
    scale = float(g_exact.abs().max())
    assert scale > 0.02
    # the old loss was biased by (K-1)/K with self-play win rates (25% here) and far noisier (its
    # per-sample coefficient carried a constant ~1)
    assert float((g_sampled - g_exact).abs().max()) < 0.05 * scale, (g_sampled, g_exact)
