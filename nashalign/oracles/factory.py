"""``build_oracle``: one place that applies the standard wrapper stack (used by the ``conf/oracle/`` configs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nashalign.oracles import wrappers as W
from nashalign.oracles.base import PreferenceOracle, as_oracle, oracle_name
from nashalign.oracles.matrix import _plain

__all__ = ["build_oracle"]

_KNOWN = (
    "symmetrize", "cache", "cache_maxsize", "cache_path", "cache_identity", "batch_size", "retry", "validate",
    "count", "name",
)  # fmt: skip


def build_oracle(
    oracle: Any,
    *,
    symmetrize: bool = False,
    cache: bool = False,
    cache_maxsize: int | None = None,
    cache_path: str | None = None,
    cache_identity: str | None = None,
    batch_size: int | None = None,
    retry: bool | int | Mapping[str, Any] | None = None,
    validate: bool = True,
    count: bool = False,
    name: str | None = None,
    wrappers: Mapping[str, Any] | None = None,
) -> PreferenceOracle:
    """Wrap ``oracle`` (anything :func:`~nashalign.oracles.as_oracle` accepts) in the standard stack.

    From the inside out: ``validated`` (named ``name``) → ``counted`` (pairs really sent to the oracle,
    retries included) → ``retrying`` → ``micro_batched`` → ``symmetrize`` → ``disk_cached`` → ``cached``.  Options can also come
    as one ``wrappers`` mapping (how the YAML configs pass them); its entries override the keywords.

    Args:
        symmetrize: ask both orders and average (removes position bias; doubles the cost).
        cache: memoise answers (``cache_maxsize`` bounds it, LRU); never for a stochastic oracle.
        cache_path: persist answers in this sqlite file (:func:`~nashalign.oracles.disk_cached`), shared by
            processes and runs; ``cache_identity`` names the oracle there (default: derived from it).
        batch_size: split calls into micro-batches of at most this many pairs (after symmetrising: the
            oracle sees ``2B`` pairs).
        retry: ``True`` / number of attempts / keyword arguments of :func:`~nashalign.oracles.retrying`.
        validate: check every answer is a probability (on by default).
        count: add a :class:`~nashalign.oracles.CountedOracle`; it is reachable as ``oracle.counter``
            (``.calls``, ``.queries``).
    """
    opts: dict[str, Any] = dict(
        symmetrize=symmetrize,
        cache=cache,
        cache_maxsize=cache_maxsize,
        cache_path=cache_path,
        cache_identity=cache_identity,
        batch_size=batch_size,
        retry=retry,
        validate=validate,
        count=count,
        name=name,
    )
    extra = _plain(wrappers) or {}
    unknown = sorted(set(extra) - set(_KNOWN))
    if unknown:
        raise ValueError(f"Unknown oracle wrapper option(s) {unknown}; known: {list(_KNOWN)}.")
    opts.update(extra)

    out: Any = as_oracle(oracle, name=opts["name"])
    label = opts["name"] or oracle_name(out)
    if opts["validate"]:
        out = W.validated(out, name=label)
    counter = None
    if opts["count"]:
        out = counter = W.counted(out)
    retry_opt = _plain(opts["retry"])
    if retry_opt:
        if retry_opt is True:
            kwargs: dict[str, Any] = {}
        elif isinstance(retry_opt, int):
            kwargs = {"attempts": retry_opt}
        elif isinstance(retry_opt, Mapping):
            kwargs = dict(retry_opt)
        else:
            raise TypeError(
                f"retry must be a bool, an int (attempts) or a dict of retrying() options; got {retry_opt!r}."
            )
        out = W.retrying(out, **kwargs)
    if opts["batch_size"]:
        out = W.micro_batched(out, int(opts["batch_size"]))
    if opts["symmetrize"]:
        out = W.symmetrize(out)
    if opts["cache_path"]:
        from nashalign.oracles.disk_cache import disk_cached

        out = disk_cached(out, str(opts["cache_path"]), identity=opts["cache_identity"])
    if opts["cache"]:
        out = W.cached(out, maxsize=opts["cache_maxsize"])
    if counter is not None:
        try:
            out.counter = counter
        except AttributeError:  # pragma: no cover - plain functions
            pass
    return out
