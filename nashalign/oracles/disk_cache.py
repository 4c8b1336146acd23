"""A persistent preference cache on disk (sqlite), shared by processes and runs: a query is paid for once.

    oracle = disk_cached(served_judge, path="prefs.sqlite")      # any oracle; composes with the other wrappers

Each answer ``P(first ≻ second | prompt)`` is stored under two keys:

* the oracle's *identity* (:func:`oracle_identity`): the served judge's endpoint, model, template and decoding
  settings (``ServedJudgeOracle.identity``), a wrapper chain's answer-changing layers (``symmetrize``), or a
  string you pass as ``identity=``.  Two oracles with the same identity share answers;
* the pair ``(prompt, first, second)``, hashed (SHA-256 of a canonical JSON encoding; tensor ids become ints).

The database runs in WAL mode with a busy timeout, so any number of processes may read and write it at once
(each write is one short ``INSERT OR IGNORE`` transaction: the first answer stored for a key wins).  Answers are
committed after every chunk of ``commit_every`` pairs sent to the oracle, so a run killed mid-way keeps every
chunk it finished and a rerun asks only for the rest.  Do not cache a stochastic oracle (it would freeze its
first draw).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import torch

from nashalign.oracles.base import Batch, batch_len, keys_of, oracle_name, take
from nashalign.oracles.wrappers import (
    CachedOracle,
    CountedOracle,
    MicroBatchedOracle,
    RetryingOracle,
    ValidatedOracle,
    _Wrapper,
)

__all__ = ["PreferenceStore", "DiskCachedOracle", "disk_cached", "oracle_identity", "pair_key"]

#: Wrappers that never change an answer (they only check, count, retry, split or memoise): left out of identities.
_NEUTRAL = (ValidatedOracle, CountedOracle, RetryingOracle, MicroBatchedOracle, CachedOracle)
_SQL_VARS = 400  # keys per SELECT ... IN (...) (sqlite's default limit is 999 variables)


def oracle_identity(oracle: Any) -> str:
    """The string that names what ``oracle`` answers, for cache keys.

    An ``identity`` attribute (a string or a method returning one) wins; answer-neutral wrappers (validated,
    counted, retrying, micro_batched, cached) are skipped; other wrappers become ``Class(inner identity)``;
    anything else falls back to its :func:`~nashalign.oracles.base.oracle_name`, which is only as unique as the
    name: pass ``identity=`` to :func:`disk_cached` for plain functions.
    """
    if isinstance(oracle, _NEUTRAL):
        return oracle_identity(oracle.inner)
    if isinstance(oracle, _Wrapper):  # checked first: _Wrapper forwards unknown attributes to the inner oracle
        return f"{type(oracle).__name__}({oracle_identity(oracle.inner)})"
    ident = getattr(oracle, "identity", None)
    if callable(ident):
        ident = ident()
    if isinstance(ident, str) and ident:
        return ident
    return f"{type(oracle).__name__}:{oracle_name(oracle)}"


def _canonical(item: Hashable) -> Any:
    if isinstance(item, tuple):
        return [_canonical(v) for v in item]
    if isinstance(item, (str, int, float, bool)) or item is None:
        return item
    raise TypeError(f"cannot store a pair item of type {type(item).__name__} on disk; use strings or integer ids.")


def pair_key(prompt: Hashable, first: Hashable, second: Hashable) -> bytes:
    """SHA-256 of the canonical JSON of ``[prompt, first, second]`` (32 bytes; order matters)."""
    text = json.dumps([_canonical(prompt), _canonical(first), _canonical(second)], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).digest()


class PreferenceStore:
    """The sqlite table ``prefs(oracle, key, value)``: one connection per process, safe across processes.

    Args:
        path: the database file (created with its parent directory when missing).
        timeout: seconds a writer waits for another process's lock before failing.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own connection
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, check_same_thread=False, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS prefs (oracle TEXT NOT NULL, key BLOB NOT NULL, value REAL NOT NULL, "
                "PRIMARY KEY (oracle, key)) WITHOUT ROWID"
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, oracle: str, keys: Sequence[bytes]) -> dict[bytes, float]:
        """The stored answers among ``keys`` for ``oracle``."""
        out: dict[bytes, float] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), _SQL_VARS):
                part = list(keys[start : start + _SQL_VARS])
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"SELECT key, value FROM prefs WHERE oracle = ? AND key IN ({marks})", [oracle, *part]
                )
                out.update((bytes(k), float(v)) for k, v in rows)
        return out

    def put(self, oracle: str, items: Sequence[tuple[bytes, float]]) -> None:
        """Store ``(key, value)`` answers in one transaction; an existing answer is kept (first write wins)."""
        if not items:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO prefs (oracle, key, value) VALUES (?, ?, ?)",
                    [(oracle, k, float(v)) for k, v in items],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def count(self, oracle: str | None = None) -> int:
        """Stored answers (for ``oracle``, or in all)."""
        with self._lock:
            conn = self._connection()
            if oracle is None:
                return int(conn.execute("SELECT COUNT(*) FROM prefs").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM prefs WHERE oracle = ?", (oracle,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict[str, Any]:  # picklable (DataLoader workers, multiprocessing): reconnect on use
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["timeout"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"PreferenceStore({str(self.path)!r})"


class DiskCachedOracle(_Wrapper):
    """Answers from :class:`PreferenceStore` when stored, else from the oracle (then stored); see :func:`disk_cached`.

    ``hits`` counts pairs answered from disk (or repeated within a call), ``misses`` the distinct pairs sent.
    """

    def __init__(
        self, oracle: Any, path: str | os.PathLike[str], identity: str | None = None, commit_every: int | None = None
    ) -> None:
        super().__init__(oracle, "disk_cached")
        if commit_every is not None and int(commit_every) < 1:
            raise ValueError(f"commit_every must be >= 1 or None (one commit per call), got {commit_every}.")
        if identity is not None and (not isinstance(identity, str) or not identity):
            raise TypeError(
                f"identity must be a non-empty string (or None: derived from the oracle), got {identity!r}."
            )
        self.store = PreferenceStore(path)
        self.identity_key = identity or oracle_identity(self.inner)
        self.commit_every = None if commit_every is None else int(commit_every)
        self.hits = 0
        self.misses = 0

    def identity(self) -> str:
        return self.identity_key

    def __len__(self) -> int:
        return self.store.count(self.identity_key)

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        keys = [pair_key(*t) for t in zip(keys_of(prompts), keys_of(first), keys_of(second))]
        known = self.store.get(self.identity_key, list(dict.fromkeys(keys)))
        todo: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in known and key not in todo:
                todo[key] = i
        self.misses += len(todo)
        self.hits += B - len(todo)
        pending = list(todo.items())
        step = self.commit_every or max(len(pending), 1)
        for start in range(0, len(pending), step):
            part = pending[start : start + step]
            idx = [i for _, i in part]
            out = self._ask(take(prompts, idx), take(first, idx), take(second, idx), len(idx))
            values = out.detach().double().cpu().tolist()
            self.store.put(self.identity_key, [(k, v) for (k, _), v in zip(part, values)])
            known.update((k, v) for (k, _), v in zip(part, values))
        return torch.tensor([known[k] for k in keys], dtype=torch.float64)

    def __repr__(self) -> str:
        return f"DiskCachedOracle({oracle_name(self.inner)}, path={str(self.store.path)!r})"


def disk_cached(
    oracle: Any, path: str | os.PathLike[str], *, identity: str | None = None, commit_every: int | None = None
) -> DiskCachedOracle:
    """Persist ``oracle``'s answers in the sqlite file ``path``, keyed by identity and ``(prompt, first, second)``.

    Args:
        oracle: any oracle (wrap a stochastic one and you freeze its first draw).
        path: the database file; share it between processes and runs.
        identity: the key that names the oracle (default :func:`oracle_identity`); answers of oracles with the
            same identity are shared, so give different judges different identities.
        commit_every: send misses to the oracle in chunks of this many pairs and commit each chunk, so a killed
            run loses at most one chunk (default: the call's misses in one chunk).

    Returns answers as float64 (stored as sqlite REAL, i.e. float64, exactly).
    """
    return DiskCachedOracle(oracle, path, identity=identity, commit_every=commit_every)
