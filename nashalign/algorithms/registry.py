"""The algorithm registry: names to classes, and the single entry point :func:`get_algorithm`."""

from __future__ import annotations

from typing import Any

ALGORITHMS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator adding an algorithm to :data:`ALGORITHMS` under ``cls.name``."""
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name` to be registered.")
    if name in ALGORITHMS and ALGORITHMS[name] is not cls:
        raise ValueError(f"an algorithm named {name!r} is already registered ({ALGORITHMS[name].__name__}).")
    ALGORITHMS[name] = cls
    return cls


def get_algorithm(name: str, **hyperparameters: Any) -> Any:
    """Build the registered algorithm ``name`` with ``hyperparameters`` (``eta``, ``tau``, ...).

    Raises:
        ValueError: unknown name (the message lists the known ones) or invalid hyperparameters.

    Examples:
        >>> from nashalign.algorithms import get_algorithm
        >>> alg = get_algorithm("egpo", eta=0.5, tau=0.1)
        >>> type(alg).__name__, alg.phases, alg.tau
        ('EGPO', 2, 0.1)
        >>> get_algorithm("omd", eta=0.5, tau=0.0)
        Traceback (most recent call last):
        ...
        ValueError: omd needs a regularised game: tau must be > 0, got 0.0. ...
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known algorithms: {', '.join(sorted(ALGORITHMS))}.")
    return ALGORITHMS[name](**hyperparameters)


#: The OmegaConf resolver name: ``${nashalign_algorithms:}`` is every registered algorithm, sorted, comma-separated.
SWEEP_RESOLVER = "nashalign_algorithms"


def algorithm_sweep() -> str:
    """``",".join(sorted(ALGORITHMS))``: the value of ``${nashalign_algorithms:}`` in a Hydra sweep.

    Examples:
        >>> from nashalign.algorithms.registry import algorithm_sweep
        >>> algorithm_sweep().split(",")[:3]
        ['apo', 'comal', 'dno']
    """
    return ",".join(sorted(ALGORITHMS))


def register_sweep_resolver() -> None:
    """Register ``${nashalign_algorithms:}`` with OmegaConf, so that a preset sweeps every registered algorithm
    (``hydra.sweeper.params.algorithm: ${nashalign_algorithms:}``) without listing them.  Idempotent; the
    Hydra apps call it before Hydra builds the sweeper."""
    from omegaconf import OmegaConf  # imported here: `import nashalign` stays free of omegaconf

    OmegaConf.register_new_resolver(SWEEP_RESOLVER, algorithm_sweep, replace=True)
