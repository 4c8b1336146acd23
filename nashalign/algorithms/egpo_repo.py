"""The baselines of EGPO's official tabular simulation as nashalign algorithms (the ``egpo_tabular`` experiment).

:func:`egpo_repo_algorithm` maps the repo's ``(baseline, beta, lr, N)`` to the exact mirror rule one plain-SGD
step on its loss equals (SPEC.md 5.2-5.4, 12(e)).  Re-exported by :mod:`nashalign.configs`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EGPO_BASELINES", "egpo_repo_algorithm"]

#: The baselines of the official simulation, in its order.
EGPO_BASELINES = ("oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo")


def egpo_repo_algorithm(baseline: str, beta: float, lr: float, num_responses: int, pg_mixture: float = 0.125) -> Any:
    """The nashalign algorithm equal to one baseline of EGPO's exact tabular simulation (SPEC.md 5.2-5.4).

    The official simulation takes one plain-SGD step (learning rate ``lr``) per iteration on a loss over
    softmax logits.  With the loss averaged over the ``N^2`` ordered pairs (uniform ``rho``), one SGD step
    is exactly one mirror step with ``eta = 4 lr / (N beta)`` (SPEC.md 5.2, 12(e)):

    * ``oipo1`` (Online IPO 1 = OMD): :class:`~nashalign.algorithms.OMD` with that ``eta``;
    * ``egpo``: :class:`~nashalign.algorithms.EGPO` with that ``eta`` (two SGD steps from ``theta_t``);
    * ``nash_md``: :class:`~nashalign.algorithms.NashMD` with that ``eta`` and the repo's mixture weight
      ``true_lr * beta = 2 lr / N`` (``true_lr = 2 lr / (beta N)``): half of the theory's ``eta beta``;
    * ``oipo2`` (Online IPO 2, pairs weighted by ``pi_t``): :class:`~nashalign.algorithms.OnlineIPO`, whose
      ``eta`` *is* the SGD learning rate on the logits of the ``pi``-weighted loss, so ``eta = lr``;
    * ``nash_md_pg``: :class:`~nashalign.algorithms.NashMD` with the free mixture ``pg_mixture`` (0.125, as
      the paper's LLM Nash-MD-PG) and the matched ``eta``.  This is *not* the repo's tabular Nash-MD-PG,
      which is a softmax policy-gradient step against the ``2 lr / N`` mixture; nashalign's tabular rule
      is the mirror step whose fixed point ``BR_beta(mix_0.125(pi, mu))`` Nash-MD-PG with that mixture
      targets (SPEC.md 12(d)).  See ``tabular/README.md`` for what this changes in the numbers.

    Args:
        baseline: one of :data:`EGPO_BASELINES`.
        beta: the KL strength (``tau``).
        lr: the repo's SGD learning rate.
        num_responses: ``N``.
        pg_mixture: the free mixture of ``nash_md_pg``.
    """
    from nashalign.algorithms import EGPO, OMD, NashMD, OnlineIPO

    if baseline not in EGPO_BASELINES:
        raise ValueError(f"unknown EGPO baseline {baseline!r}; choose one of {list(EGPO_BASELINES)}.")
    if not (beta > 0 and lr > 0 and num_responses >= 1):
        raise ValueError(f"need beta > 0, lr > 0, num_responses >= 1; got {beta}, {lr}, {num_responses}.")
    eta = 4.0 * lr / (num_responses * beta)
    if baseline == "oipo1":
        return OMD(eta=eta, tau=beta)
    if baseline == "oipo2":
        return OnlineIPO(eta=lr, tau=beta)
    if baseline == "nash_md":
        return NashMD(eta=eta, tau=beta, mixture=2.0 * lr / num_responses)
    if baseline == "nash_md_pg":
        return NashMD(eta=eta, tau=beta, mixture=pg_mixture)
    return EGPO(eta=eta, tau=beta)


