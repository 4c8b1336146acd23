"""Sampled preference feedback: what each algorithm needs, estimated from oracle queries.

One code path for the tabular sampled mode and the LLM trainer.  A *sampler* draws responses and an
*oracle* answers ``P(first > second | prompt)``; the estimators turn those answers into the signal
``s(y) = sum_j c_j P(y > q_j)`` of the algorithm's opponents (:class:`~nashalign.algorithms.base.Opponent`)
for the responses the loss is evaluated on.

Estimators (``estimator=``):

* ``"pair"`` (INPO, online IPO, OMD): ``y, y' ~ q`` from the (single) opponent and the soft label
  ``signal = (P(y > y'), 1/2)``.  Over i.i.d. pairs the pairwise loss has the step as its minimiser
  (the IPO trick, SPEC.md section 8).  One query per pair.
* ``"opponent"`` (EGPO, Nash-MD, OMWU): ``y, y' ~ pi_t`` and, for each opponent ``j``, ``m`` samples
  ``y''_j ~ q_j``; ``signal(y) = sum_j c_j mean_m P(y > y''_jm)``.  ``2 m J`` queries per pair.
* ``"winrate"`` (SPPO, SPO, DNO): ``K`` samples ``y_1..y_K ~ pi_t``; for the opponent ``pi_t`` itself
  the self-play win rate ``Phat(y_i > pi_t) = (1/K) sum_l P(y_i > y_l)`` including ``l = i`` (1/2),
  as SPPO's ``compute_prob.py``; other opponents get ``m`` samples each.  Rows are all ``K(K-1)/2``
  pairs (pairwise forms) or the ``K`` responses themselves (per-response forms); ``pairs="best_worst"``
  keeps SPPO's / DNO-Prct's (argmax, argmin) pair only (a heuristic, SPEC.md section 11 note 7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nashalign.algorithms.base import Opponent

ESTIMATORS = ("pair", "opponent", "winrate")

#: ``sampler(opponent_or_None, prompt_index (B,), k) -> responses``: ``k`` responses per prompt, laid out
#: prompt-major (``B * k`` items: a 1-D tensor of ids, or a list).  ``None`` means the current policy.
Sampler = Callable[[Opponent | None, torch.Tensor, int], Any]


@dataclass
class Feedback:
    """Rows for the loss, built from sampled responses and oracle answers.

    Attributes:
        prompt: ``(R,)`` index (into the batch of prompts) of each row.
        index: ``(R, K)`` indices into ``responses`` of the responses of each row.
        signal: ``(R, K)`` estimated signal of each response.
        responses: the responses drawn for the loss (flat, prompt-major).
        queries: oracle queries spent (pairs asked).
        behavior: ``"current"`` when ``responses`` come from ``pi_t``, else the opponent kind they come from.
    """

    prompt: torch.Tensor
    index: torch.Tensor
    signal: torch.Tensor
    responses: Any
    queries: int
    behavior: str = "current"


def take(responses: Any, idx: torch.Tensor) -> Any:
    """``responses[idx]`` for a tensor of responses or a list (flattened index)."""
    if isinstance(responses, torch.Tensor):
        return responses[idx.reshape(-1).to(responses.device)]
    flat = idx.reshape(-1).tolist()
    return [responses[i] for i in flat]


def _ask(oracle: Callable[..., Any], prompts: Any, first: Any, second: Any) -> torch.Tensor:
    """The oracle's answers to ``len(first)`` queries, validated at the boundary: a float tensor ``(B,)`` in
    ``[0, 1]``, or :class:`~nashalign.oracles.OracleError` naming the oracle and the offending query."""
    from nashalign.oracles.base import oracle_name
    from nashalign.oracles.wrappers import check_answers

    B = len(first)
    return check_answers(oracle(prompts, first, second), B, prompts, first, second, oracle_name(oracle))


#: Loss forms whose label enters non-linearly (the logistic's ``sigma(ds)``).  Their minimiser over sampled rows is
#: the step only when each row's label difference ``ds`` is the exact ``s(y) - s(y')``; with an unbiased but noisy
#: ``ds`` it is off by the curvature of ``sigma``.  Under ``opponent``/``winrate`` that bias shrinks as the signal
#: estimate sharpens (``opponent_samples``, ``k``; tests/algorithms/test_exactness.py measures it for k = 2, 4, 6);
#: under ``pair`` the label ``P(y > y') - 1/2`` is ``ds`` only in expectation over ``y'``, so no sample size
#: removes it.
NONLINEAR_LABEL_FORMS = ("logistic",)


def _prompts_for(prompts: Any, rows: torch.Tensor) -> Any:
    """The prompt of each row: ``prompts`` is a tensor of context ids or a list of prompt strings."""
    if isinstance(prompts, torch.Tensor):
        return prompts[rows.to(prompts.device)]
    return [prompts[i] for i in rows.tolist()]


def check_form_estimator(alg: Any, estimator: str) -> None:
    """Refuse a (loss form, estimator) combination whose sampled minimiser does not converge to the exact step.

    With the ``pair`` estimator each row is one pair ``y, y' ~ q`` with the label ``P(y > y')`` (and 1/2).  A loss
    *linear* in the label has the step as its minimiser over i.i.d. pairs (``regression``: the square loss projects
    ``P(y > y') - 1/2`` onto ``f(y) - f(y')`` and gives ``f = eta P(. > q)``, the IPO trick, SPEC.md section 8;
    ``pg`` likewise).  The ``logistic`` form's minimiser solves ``E_{y'}[sigma(h/eta) - sigma(P(y > y') - 1/2)] = 0``
    instead, which is not the step however many pairs are drawn (tests/algorithms/test_exactness.py measures both in
    the infinite-batch limit), so the combination raises.
    """
    form = getattr(alg, "form", None)
    name = getattr(alg, "name", "") or type(alg).__name__
    if estimator != "pair":
        return
    for phase in range(int(getattr(alg, "phases", 1))):
        opps = alg.neural_opponents(0, phase)
        if len(opps) != 1 or opps[0].coef != 1.0:
            raise ValueError(
                f"{name}: the 'pair' estimator needs a single opponent with coefficient 1 (pairs are drawn from it), "
                f"but phase {phase} has {len(opps)}; use estimator='opponent' for this algorithm."
            )
        if form == "pg" and opps[0].kind != "current":
            raise ValueError(
                f"{name}: the policy-gradient form needs responses from pi_t, but the 'pair' estimator draws them "
                f"from the '{opps[0].kind}' opponent; use estimator='opponent'."
            )
    if form not in NONLINEAR_LABEL_FORMS:
        return
    raise ValueError(
        f"{name}: form={form!r} cannot be trained with estimator='pair': the logistic loss is non-linear in the "
        "pair's soft label P(y > y'), so its minimiser over i.i.d. pairs is not the mirror step, however many pairs "
        "are drawn (only losses linear in the label, form='regression' or 'pg', are exact with pairs). Use "
        f"form='regression' with estimator='pair', or keep form={form!r} and pass estimator='winrate' (or "
        "'opponent'), whose per-response signal makes the logistic minimiser converge to the step as k grows."
    )


def estimate(
    estimator: str,
    opponents: Sequence[Opponent],
    prompts: Any,
    sampler: Sampler,
    oracle: Callable[..., Any],
    *,
    k: int = 2,
    opponent_samples: int = 1,
    pairwise_rows: bool = True,
    pairs: str = "all",
) -> Feedback:
    """Estimate the signal of ``opponents`` on fresh samples (see the module docstring).

    Args:
        estimator: ``"pair"``, ``"opponent"`` or ``"winrate"``.
        opponents: what the algorithm's ``opponents(state, phase)`` returned.
        prompts: ``B`` prompts (a tensor of context ids, or a list).
        sampler: draws responses (see :data:`Sampler`).
        oracle: the preference oracle.
        k: responses per prompt drawn for the loss (2 for ``pair``/``opponent``; ``K`` for ``winrate``).
        opponent_samples: ``m``, opponent samples per response (``opponent``/``winrate``).
        pairwise_rows: build ``(R, 2)`` pair rows (pairwise loss forms) or ``(B, k)`` rows (per-response forms).
        pairs: ``"all"`` or ``"best_worst"`` (``winrate`` only).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}.")
    B = len(prompts)
    base = torch.arange(B)
    queries = 0
    if estimator == "pair":
        if len(opponents) != 1 or opponents[0].coef != 1.0:
            raise ValueError(
                "the 'pair' estimator needs a single opponent with coefficient 1 (pairs are drawn from it); "
                "use estimator='opponent' for this algorithm."
            )
        resp = sampler(opponents[0], base, 2)  # (B*2,)
        idx = torch.arange(2 * B).reshape(B, 2)
        p = _ask(oracle, prompts, take(resp, idx[:, 0]), take(resp, idx[:, 1]))  # (B,)
        signal = torch.stack([p, torch.full_like(p, 0.5)], dim=-1)  # (B, 2)
        kind = opponents[0].kind
        return Feedback(base, idx, signal, resp, B, "current" if kind == "current" else kind)

    k = max(int(k), 2)
    resp = sampler(None, base, k)  # (B*k,) from pi_t
    idx = torch.arange(B * k).reshape(B, k)
    signal = None
    for opp in opponents:
        if estimator == "winrate" and opp.kind == "current":
            # self-play win rates inside the group, self-comparison 1/2 included (SPPO compute_prob.py)
            ii, jj = torch.triu_indices(k, k, offset=1)  # (P,)
            fi = idx[:, ii].reshape(-1)
            fj = idx[:, jj].reshape(-1)
            pr = base.repeat_interleave(ii.numel())
            p = _ask(oracle, _prompts_for(prompts, pr), take(resp, fi), take(resp, fj)).reshape(B, -1)
            queries += fi.numel()
            M = torch.full((B, k, k), 0.5, dtype=p.dtype, device=p.device)
            M[:, ii, jj] = p
            M[:, jj, ii] = 1.0 - p
            term = M.mean(-1)  # (B, k)
        else:
            m = max(int(opponent_samples), 1)
            z = sampler(opp, base, m)  # (B*m,)
            zi = torch.arange(B * m).reshape(B, m)
            fi = idx.unsqueeze(-1).expand(B, k, m).reshape(-1)
            fz = zi.unsqueeze(1).expand(B, k, m).reshape(-1)
            pr = base.repeat_interleave(k * m)
            p = _ask(oracle, _prompts_for(prompts, pr), take(resp, fi), take(z, fz)).reshape(B, k, m)
            queries += fi.numel()
            term = p.mean(-1)  # (B, k)
        term = term if opp.coef == 1.0 else opp.coef * term
        signal = term if signal is None else signal + term
    if signal is None:
        raise ValueError("the algorithm named no opponents; an estimator needs at least one.")
    if not pairwise_rows:
        return Feedback(base, idx, signal, resp, queries)
    if estimator == "winrate" and pairs == "best_worst":
        best = signal.argmax(-1)
        worst = signal.argmin(-1)
        ri = torch.stack([best, worst], -1)  # (B, 2)
        return Feedback(base, idx.gather(1, ri), signal.gather(1, ri.to(signal.device)), resp, queries)
    ii, jj = torch.triu_indices(k, k, offset=1)
    pair_idx = torch.stack([idx[:, ii], idx[:, jj]], -1).reshape(-1, 2)  # (B*P, 2)
    pair_sig = torch.stack([signal[:, ii], signal[:, jj]], -1).reshape(-1, 2)
    return Feedback(base.repeat_interleave(ii.numel()), pair_idx, pair_sig, resp, queries)
