"""What a solve returns: the last and average iterates, a columnar history, the settings and a status."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nashalign import _xp

#: History columns, in order.  Missing values (e.g. KL when no target is known) are NaN.
COLUMNS = (
    "step",  # completed iterations
    "expl_last",  # max_y P(y > pi_t) - 1/2, mean over contexts
    "expl_avg",  # the same for the uniform average of pi_1..pi_t
    "reg_expl_last",  # tau KL(pi_t || BR_tau(pi_t)), mean over contexts (tau > 0)
    "reg_expl_avg",
    "kl_target_last",  # KL(target || pi_t), mean over contexts, when a target equilibrium is known
    "kl_target_avg",
    "queries",  # preference-oracle queries so far (sampled mode; exact mode counts 0)
    "time",  # wall-clock seconds since the start (excluding recording)
)


@dataclass
class History:
    """Columnar record, one row per recorded step (see :data:`COLUMNS`)."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def append(self, **row: float) -> None:
        self.rows.append({c: float(row.get(c, math.nan)) for c in COLUMNS})

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in COLUMNS:
            raise KeyError(f"unknown history column {column!r}; columns are {list(COLUMNS)}")
        return np.array([r[column] for r in self.rows], dtype=float)

    def __len__(self) -> int:
        return len(self.rows)

    def last(self, column: str) -> float:
        return self.rows[-1][column] if self.rows else math.nan

    def as_dict(self) -> dict[str, list[float]]:
        return {c: [r[c] for r in self.rows] for c in COLUMNS}

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS))
            w.writeheader()
            for r in self.rows:
                w.writerow(r)

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> History:
        n = len(d.get("step", []))
        return cls([{c: float(d.get(c, [math.nan] * n)[i]) for c in COLUMNS} for i in range(n)])


@dataclass
class SolveResult:
    """Result of :func:`nashalign.solve`.

    Attributes:
        last: the last iterate ``pi_T`` as probabilities, ``(n,)`` or ``(C, n)`` (numpy or torch like the game).
        average: the uniform average ``(1/T) sum_{t=1..T} pi_t``.
        history: :class:`History` of the recorded steps.
        settings: everything that produced the run (algorithm, hyperparameters, steps, backend, seed, ...).
        status: ``"ok"`` (ran all steps), ``"converged"`` (reached ``tol``), ``"diverged"`` (the last iterate
            moved away from the regularised equilibrium, or became NaN) or ``"stalled"`` (with ``tau > 0``, the
            last iterate stopped approaching ``pi*_tau``: a limit cycle, or a biased fixed point such as
            Nash-MD's with a constant step) or ``"collapsed"`` (sampled mode: the policy fell onto one response per
            context that is no equilibrium, so every sample was identical and no signal was left; ``diverged_at``
            is the step).
        diverged_at: the step where divergence (or a collapse) was detected, else None.
        message: a human-readable account of the status.
        state: the final algorithm state (resume with ``solve(..., state=result.state)``).
    """

    last: Any
    average: Any
    history: History
    settings: dict[str, Any]
    status: str = "ok"
    diverged_at: int | None = None
    message: str = ""
    state: Any = None

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON with the iterates, the history, the settings and the status (``path`` writes it too)."""
        doc = {
            "status": self.status,
            "diverged_at": self.diverged_at,
            "message": self.message,
            "settings": self.settings,
            "last": _xp.to_numpy(self.last).tolist(),
            "average": _xp.to_numpy(self.average).tolist(),
            "history": self.history.as_dict(),
        }
        text = json.dumps(doc, indent=1, default=str, allow_nan=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> SolveResult:
        raw = str(text_or_path)
        text = raw if raw.lstrip().startswith("{") else Path(raw).read_text()
        d = json.loads(text)
        return cls(
            last=np.asarray(d["last"]),
            average=np.asarray(d["average"]),
            history=History.from_dict(d["history"]),
            settings=d["settings"],
            status=d["status"],
            diverged_at=d["diverged_at"],
            message=d.get("message", ""),
        )
