"""The one test-case registry: every registered algorithm's settings for every registry-wide test.

One :class:`Case` per algorithm, read by ``tests/algorithms/test_contract.py`` (``contract``, ``variants``,
``fixed_point``, the reference step), ``tests/algorithms/test_exactness.py`` (``exact``, ``exact_extra``) and
``tests/test_sampled.py`` (``sampled``, ``sampled_extra``).  Adding an algorithm = its file, its YAML and one
:func:`add` call here (or, from a test module, at runtime: ``tests/algorithms/test_throwaway_algorithm.py``).
Each test module asserts ``set(CASES) == set(ALGORITHMS)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import reference_steps

#: ``fixed_point`` values: pi*_tau is a fixed point (SPEC.md 1(d)); the uniform NE of rock-paper-scissors is one
#: (unregularised rules); a prox-point rule whose centres converge to the unregularised NE; or neither is claimed.
FIXED_POINTS = ("pi_star", "ne", "prox_ne", None)


@dataclass(frozen=True)
class Case:
    """Everything the registry-wide tests need to know about one algorithm.

    Attributes:
        contract: hyperparameters of the contract suite (``eta``, ``tau`` and any extra ones).
        exact: ``(eta, tau)`` pairs at which the loss minimiser over a softmax table must equal the exact step.
        sampled: an ``(eta, tau)`` at which sampled (Bernoulli) feedback moves toward the equilibrium.
        exact_extra / sampled_extra: hyperparameters beyond ``(eta, tau)`` for those two suites.
        variants: other contract cases, ``{case id: (hyperparameters, fixed_point)}``.
        fixed_point: one of :data:`FIXED_POINTS` for ``contract``.
        reference: the independent naive step ``(hp, P, logp, logmu, memory) -> (logp, memory)`` on one context
            (plain Python floats; see ``reference_steps.py``) and ``reference_memory(logp) -> memory``.
        closed_form: optional ``{case id: () -> (iterations, expected pi)}`` on RPS from ``PI0``/``MU`` of
            ``test_contract.py``, written by hand (the built-in rules' closed forms live in ``test_contract.py``).
    """

    contract: dict
    exact: list[tuple[float, float]]
    sampled: tuple[float, float]
    reference: Callable
    reference_memory: Callable
    exact_extra: dict = field(default_factory=dict)
    sampled_extra: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    fixed_point: str | None = None
    closed_form: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fixed_point not in FIXED_POINTS or any(fp not in FIXED_POINTS for _, fp in self.variants.values()):
            raise ValueError(f"fixed_point must be one of {FIXED_POINTS}")


CASES: dict[str, Case] = {}


def add(name: str, case: Case) -> Case:
    """Register ``case`` for the algorithm ``name`` (a name is registered once)."""
    if name in CASES:
        raise ValueError(f"a test case for {name!r} is already registered")
    CASES[name] = case
    return case


def contract_cases() -> dict[str, tuple[str, dict, str | None]]:
    """``{case id: (algorithm name, hyperparameters, fixed_point)}``: every contract case and variant."""
    out = {name: (name, c.contract, c.fixed_point) for name, c in CASES.items()}
    for name, c in CASES.items():
        out.update({vid: (name, hp, fp) for vid, (hp, fp) in c.variants.items()})
    return out


def _builtin(name: str, contract: dict, exact: list, sampled: tuple, **kw) -> Case:
    return add(name, Case(contract, exact, sampled, functools.partial(reference_steps.step_one_context, name),
                          functools.partial(reference_steps.initial_memory, name), **kw))


_UNREG = [(0.3, 0.0), (1.5, 0.0)]
_REG = [(0.5, 0.1), (2.0, 0.4)]
for _n in ("mwu", "sppo", "spo", "dno"):
    _builtin(_n, {"eta": 0.3, "tau": 0.0}, _UNREG, (0.3, 0.0), fixed_point="ne")
for _n in ("omd", "inpo"):
    _builtin(_n, {"eta": 0.5, "tau": 0.1}, _REG, (0.5, 0.1), fixed_point="pi_star")
_builtin("nash_md", {"eta": 0.5, "tau": 0.1}, _REG, (0.5, 0.1),
         variants={"nash_md_mixture": ({"eta": 0.5, "tau": 0.1, "mixture": 0.5}, None)})
_builtin("egpo", {"eta": 0.5, "tau": 0.1}, [*_REG, (1.0, 0.0)], (0.5, 0.1), fixed_point="pi_star",
         variants={"egpo_tau0": ({"eta": 0.3, "tau": 0.0}, "ne")})
_builtin("omwu", {"eta": 0.5, "tau": 0.1}, [(0.5, 0.1), (1.0, 0.0)], (0.3, 0.1), fixed_point="pi_star",
         variants={"omwu_tau0": ({"eta": 0.3, "tau": 0.0}, "ne")})
_builtin("nash_ema", {"eta": 0.5, "tau": 0.1, "beta": 0.3}, _REG, (0.5, 0.1), fixed_point="pi_star",
         sampled_extra={"beta": 0.5})
_builtin("online_ipo", {"eta": 0.05, "tau": 0.1}, [(0.02, 0.1), (0.05, 0.4)], (0.05, 0.1), fixed_point="pi_star")
_builtin("mpo", {"eta": 0.5, "tau": 0.1, "every": 3}, _REG, (0.5, 0.1), fixed_point="prox_ne",
         sampled_extra={"every": 20})
_builtin("comal", {"eta": 0.5, "tau": 0.1, "every": 3}, _REG, (0.5, 0.1), fixed_point="prox_ne",
         sampled_extra={"every": 10},
         variants={"comal_inpo": ({"eta": 0.5, "tau": 0.1, "every": 3, "inner": "inpo"}, "prox_ne")})
_builtin("nash_prox", {"eta": 0.05, "tau": 0.5, "beta": 0.1, "every": 3}, [(0.02, 0.1), (0.05, 0.4)], (0.05, 0.5),
         sampled_extra={"beta": 0.1},
         variants={"nash_prox_beta0": ({"eta": 0.05, "tau": 0.5, "beta": 0.0, "every": 3}, "prox_ne")})
_builtin("onpo", {"eta": 0.5, "tau": 0.1}, [(0.5, 0.1), (1.0, 0.0)], (0.3, 0.1), fixed_point="pi_star",
         variants={"onpo_tau0": ({"eta": 0.3, "tau": 0.0}, "ne")})
_builtin("apo", {"eta": 0.3, "tau": 0.0, "alpha": 0.5}, _UNREG, (0.3, 0.0), fixed_point="ne",
         exact_extra={"alpha": 0.5})
_builtin("mnpo", {"eta": 0.5, "tau": 0.1, "lam": 0.5}, _REG, (0.5, 0.1), fixed_point="pi_star",
         exact_extra={"lam": 0.4})
_builtin("rspo", {"eta": 0.5, "tau": 0.1, "tau_forward": 0.05}, [*_REG, (0.5, 0.0)], (0.5, 0.1),
         exact_extra={"tau_forward": 0.2},
         variants={"rspo_reverse_only": ({"eta": 0.5, "tau": 0.1, "tau_forward": 0.0}, "pi_star")})
# XPO: tau = beta; its argmin is the regularised best response, a contraction for tau = 1 (sampled mode)
_builtin("xpo", {"eta": 0.1, "tau": 0.5, "alpha": 1e-3}, [(0.1, 0.5), (0.1, 2.0)], (0.1, 1.0), fixed_point="pi_star",
         exact_extra={"alpha": 0.02},
         variants={"xpo_alpha0": ({"eta": 0.1, "tau": 0.5, "alpha": 0.0}, "pi_star")})
