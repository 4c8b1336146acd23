"""Every game-theoretic alignment algorithm, one file each, one definition per algorithm.

Each algorithm is a frozen dataclass of hyperparameters whose ``update`` is the exact tabular step
(numpy or torch) and whose ``loss`` is its torch lift to neural policies.  See :mod:`.base`.
"""

from nashalign.algorithms.apo import APO
from nashalign.algorithms.base import (
    OPPONENT_KINDS,
    Algorithm,
    LossInputs,
    LossOutput,
    MirrorAlgorithm,
    Opponent,
    State,
)
from nashalign.algorithms.comal import COMAL
from nashalign.algorithms.dno import DNO
from nashalign.algorithms.egpo import EGPO
from nashalign.algorithms.inpo import INPO
from nashalign.algorithms.mnpo import MNPO
from nashalign.algorithms.mpo import MPO
from nashalign.algorithms.mwu import MWU
from nashalign.algorithms.nash_ema import NashEMA
from nashalign.algorithms.nash_md import NashMD
from nashalign.algorithms.nash_prox import NashProx
from nashalign.algorithms.omd import OMD
from nashalign.algorithms.omwu import OMWU
from nashalign.algorithms.online_ipo import OnlineIPO
from nashalign.algorithms.onpo import ONPO
from nashalign.algorithms.registry import ALGORITHMS, get_algorithm, register
from nashalign.algorithms.rspo import RSPO
from nashalign.algorithms.spo import SPO
from nashalign.algorithms.sppo import SPPO
from nashalign.algorithms.xpo import XPO

__all__ = [
    "APO",
    "MNPO",
    "RSPO",
    "XPO",
    "ALGORITHMS",
    "DNO",
    "EGPO",
    "INPO",
    "MWU",
    "OMD",
    "OMWU",
    "OPPONENT_KINDS",
    "SPO",
    "SPPO",
    "Algorithm",
    "LossInputs",
    "LossOutput",
    "MirrorAlgorithm",
    "NashEMA",
    "NashMD",
    "OnlineIPO",
    "Opponent",
    "State",
    "get_algorithm",
    "register",
    "COMAL",
    "MPO",
    "NashProx",
    "ONPO",
]
