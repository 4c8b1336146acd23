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
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known algorithms: {', '.join(sorted(ALGORITHMS))}.")
    return ALGORITHMS[name](**hyperparameters)
