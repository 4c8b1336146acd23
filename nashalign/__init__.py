"""nashalign: Nash learning from human feedback.

Exact equilibria of preference games (cvxpy), every game-theoretic alignment algorithm run exactly on
them, from sampled feedback, and lifted to neural policies with the same update rules.

Examples:
    Quickstart: solve a regularised game to machine precision.

    >>> import nashalign as na
    >>> game = na.games.rock_paper_scissors(ref=[0.7, 0.2, 0.1])
    >>> res = na.solve(game, "egpo", eta=0.5, tau=0.1, steps=300)
    >>> bool(res.history.last("kl_target_last") < 1e-10)
    True
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from nashalign import algorithms, schedules
from nashalign.algorithms import ALGORITHMS, Algorithm, LossInputs, LossOutput, State, get_algorithm, register
from nashalign.game import PreferenceGame
from nashalign.metrics import duality_gap, exploitability, kl_divergence, win_rate
from nashalign.result import History, SolveResult
from nashalign.solve import BlockOptions, CheckpointOptions, PrecisionOptions, solve

__version__ = "0.1.0"

# Lazily imported submodules/names: cvxpy (equilibrium) and the oracle/LLM stacks load on first use,
# so `import nashalign` stays fast and never imports transformers.
_LAZY = {
    "games": ("nashalign.games", None),
    "equilibrium": ("nashalign.equilibrium", None),
    "solve_nash": ("nashalign.equilibrium", "solve_nash"),
    "solve_regularized_nash": ("nashalign.equilibrium", "solve_regularized_nash"),
    "oracles": ("nashalign.oracles", None),
    "PreferenceOracle": ("nashalign.oracles", "PreferenceOracle"),
    "OracleError": ("nashalign.oracles", "OracleError"),
    "MatrixOracle": ("nashalign.oracles", "MatrixOracle"),
    "ClassMatrixOracle": ("nashalign.oracles", "ClassMatrixOracle"),
    "as_oracle": ("nashalign.oracles", "as_oracle"),
    "build_oracle": ("nashalign.oracles", "build_oracle"),
    "symmetrize": ("nashalign.oracles", "symmetrize"),
    "validated": ("nashalign.oracles", "validated"),
    "check_oracle": ("nashalign.oracles", "check_oracle"),
    "solve_minimax": ("nashalign.prox", "solve_minimax"),
    "sampled": ("nashalign.sampled", None),
    "reporting": ("nashalign.reporting", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod_name, attr = _LAZY[name]
        mod = import_module(mod_name)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nashalign' has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BlockOptions",
    "CheckpointOptions",
    "PrecisionOptions",
    "ClassMatrixOracle",
    "MatrixOracle",
    "OracleError",
    "PreferenceOracle",
    "as_oracle",
    "build_oracle",
    "check_oracle",
    "solve_minimax",
    "symmetrize",
    "validated",
    "History",
    "LossInputs",
    "LossOutput",
    "PreferenceGame",
    "SolveResult",
    "State",
    "algorithms",
    "duality_gap",
    "equilibrium",
    "exploitability",
    "games",
    "get_algorithm",
    "kl_divergence",
    "oracles",
    "register",
    "schedules",
    "solve",
    "solve_nash",
    "solve_regularized_nash",
    "win_rate",
]
