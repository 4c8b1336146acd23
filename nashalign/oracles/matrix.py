"""Tabular oracles: a game's preference matrix, and class matrices over response strings.

:class:`MatrixOracle` answers with ``P[x, y, y']`` for integer context and response ids, exactly or as
Bernoulli outcomes (noisy human feedback); it is the oracle of the tabular sampled mode.
:class:`ClassMatrixOracle` maps response *strings* to classes and answers with a per-prompt class
matrix; it is the oracle of the known-equilibrium language-model benchmark, where the tabular Nash
equilibrium over classes is the ground truth the fine-tuned model should reach.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nashalign import _validation as V
from nashalign.game import PreferenceGame
from nashalign.oracles.base import Batch, OracleBase, OracleError, batch_len, describe_item

__all__ = ["MatrixOracle", "ClassMatrixOracle"]


def _as_game(game_or_P: Any) -> PreferenceGame:
    if isinstance(game_or_P, PreferenceGame):
        return game_or_P
    x = _plain(game_or_P)
    if not isinstance(x, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(
            f"MatrixOracle: game must be a PreferenceGame or a preference matrix P ((n, n) or (C, n, n) "
            f"probabilities), got {type(x).__name__} {x!r:.40}. Build one with nashalign.games (e.g. "
            "games.rock_paper_scissors())."
        )
    return PreferenceGame(V.as_float_array(x, "game (the preference matrix P)"))


def _plain(x: Any) -> Any:
    """OmegaConf containers (from YAML configs) to plain lists/dicts; everything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, (DictConfig, ListConfig)):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        pass
    return x


def _as_index(x: Batch, device: torch.device, label: str) -> torch.Tensor:
    """``x`` as a 1-D long tensor of ids: integer tensors/arrays/lists, or floats with integer values."""
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype == torch.bool or torch.is_complex(x):
            raise OracleError(f"MatrixOracle: {label} must hold integer ids, got a {x.dtype} tensor.")
        if x.ndim != 1:
            raise OracleError(f"MatrixOracle: {label} must be a 1-D tensor of ids, got shape {tuple(x.shape)}.")
        return x.to(device=device, dtype=torch.long)
    try:
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.float64)
            if arr.size and np.abs(arr).max() >= 2**62:
                raise ValueError("ids too large")
        elif arr.dtype.kind not in "iu" and not (arr.dtype.kind == "O" and arr.size == 0):
            raise ValueError(f"dtype {arr.dtype} is not an integer type")
        if arr.ndim != 1:
            raise ValueError(f"shape {arr.shape} is not 1-D")
        return torch.as_tensor(arr.astype(np.int64), device=device)
    except (TypeError, ValueError, OverflowError) as err:
        raise OracleError(
            f"MatrixOracle: {label} must be integer ids (a 1-D int tensor or a list of ints); "
            f"got {describe_item(x)}: {err}"
        ) from err


class MatrixOracle(OracleBase):
    """The oracle of a tabular game: ``P(y ≻ y' | x) = P[x, y, y']`` for integer ids.

    Args:
        game_or_P: a :class:`~nashalign.PreferenceGame`, or its matrix ``(n, n)`` / ``(C, n, n)`` (numpy,
            torch or nested lists; validated by ``PreferenceGame``).  A torch game keeps its device and
            dtype; a numpy game is answered in float64 on the CPU.
        bernoulli: answer with outcomes ``o ~ Bernoulli(P[x, y, y'])`` in ``{0, 1}`` instead of the
            probability (noisy human feedback, an unbiased estimate of ``P``).  A self-comparison
            ``y = y'`` answers exactly ``1/2`` (the expectation, with no noise), so ``P(y ≻ y) = 1/2``
            holds for every draw.
        seed: seed of the oracle's own ``torch.Generator`` (on the game's device); ignored when
            ``generator`` is given.  With neither, a generator seeded with 0 is used: a Bernoulli oracle is
            reproducible by default.
        generator: a ``torch.Generator`` to draw from (must live on the game's device).
        check_indices: check that ids are in range (one reduction per call; turn off only on a hot path
            whose ids you trust).

    Call with ``prompts`` = context ids (all zeros for a single-context game), ``first``/``second`` =
    response ids; each a 1-D integer tensor or a list of ints.  The gather ``P[x, y, y']`` is one
    vectorised indexing operation.

    Examples:
        >>> from nashalign.oracles import MatrixOracle
        >>> rps = [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]   # rock, paper, scissors
        >>> oracle = MatrixOracle(rps)
        >>> oracle([0, 0], [1, 0], [0, 0]).tolist()   # paper vs rock, rock vs rock
        [1.0, 0.5]
    """

    def __init__(
        self,
        game_or_P: Any,
        bernoulli: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        check_indices: bool = True,
        name: str | None = None,
    ) -> None:
        game = _as_game(game_or_P)
        P = game.P
        self.P: torch.Tensor = P if isinstance(P, torch.Tensor) else torch.from_numpy(np.asarray(P))
        self.game = game
        self._flat = self.P.contiguous().view(-1)
        self.bernoulli = V.check_bool(bernoulli, "bernoulli")
        self.check_indices = V.check_bool(check_indices, "check_indices")
        seed = V.check_seed(seed)
        if generator is None:
            generator = torch.Generator(device=self.P.device)
            generator.manual_seed(0 if seed is None else seed)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        elif generator.device != self.P.device:
            raise ValueError(
                f"generator lives on {generator.device} but the game's P lives on {self.P.device}; create "
                f"it with torch.Generator(device={str(self.P.device)!r})."
            )
        self.generator = generator
        C, n = self.P.shape[0], self.P.shape[-1]
        self.name = name or f"MatrixOracle(C={C}, n={n}{', bernoulli' if bernoulli else ''})"

    @property
    def num_contexts(self) -> int:
        return int(self.P.shape[0])

    @property
    def num_responses(self) -> int:
        return int(self.P.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.P.device

    def __repr__(self) -> str:
        return self.name

    def _gather(self, prompts: Batch, first: Batch, second: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch_len(prompts, first, second, self.name)
        dev = self.P.device
        c = _as_index(prompts, dev, "prompts (context ids)")
        i = _as_index(first, dev, "first (response ids)")
        j = _as_index(second, dev, "second (response ids)")
        if self.check_indices and c.numel():
            C, n = self.num_contexts, self.num_responses
            lo = torch.stack([c.min(), i.min(), j.min()])
            hi = torch.stack([c.max(), i.max(), j.max()])
            bounds = torch.tensor([C, n, n], device=dev)
            if bool((lo < 0).any() | (hi >= bounds).any()):
                lo_l, hi_l = lo.tolist(), hi.tolist()
                raise OracleError(
                    f"{self.name}: ids out of range: context ids span [{lo_l[0]}, {hi_l[0]}] (need 0..{C - 1}), "
                    f"response ids span [{min(lo_l[1:])}, {max(hi_l[1:])}] (need 0..{n - 1}). For a "
                    "single-context game pass context id 0 for every pair."
                )
        n = self.num_responses
        return torch.take(self._flat, (c * n + i) * n + j), i, j  # = P[c, i, j], one flat gather

    def probabilities(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        """The exact ``P[x, y, y']`` (no Bernoulli noise), shape ``(B,)``."""
        return self._gather(prompts, first, second)[0]

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        p, i, j = self._gather(prompts, first, second)
        if not self.bernoulli:
            return p
        out = torch.bernoulli(p, generator=self.generator)
        return torch.where(i == j, torch.full_like(out, 0.5), out)


# =========================================================================== class matrices
_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": lambda s: s.strip().lower(),
    "casefold": lambda s: s.strip().casefold(),
    "none": lambda s: s,
}


def _normalizer(normalize: Callable[[str], str] | str | None) -> Callable[[str], str]:
    if normalize is None:
        return _NORMALIZERS["none"]
    if callable(normalize):
        return normalize
    if normalize in _NORMALIZERS:
        return _NORMALIZERS[normalize]
    from nashalign.oracles.base import _resolve_dotted

    fn = _resolve_dotted(normalize)
    if not callable(fn):
        raise TypeError(f"normalize={normalize!r} does not name a callable.")
    return fn


def _class_matrix(P: Any, k: int, label: str) -> torch.Tensor:
    arr = np.asarray(_plain(P), dtype=np.float64)
    if arr.shape != (k, k):
        raise ValueError(
            f"ClassMatrixOracle: the matrix for {label} must be ({k}, {k}) to match its {k} classes, got "
            f"shape {arr.shape}."
        )
    PreferenceGame(arr)  # validates range, finiteness and P + P^T = 1
    return torch.from_numpy(arr)


class ClassMatrixOracle(OracleBase):
    """Preferences over response *classes*: ``P(a ≻ b | x) = P_x[class(a), class(b)]``.

    Response strings are normalised (``normalize``, default ``str.strip``) and looked up in a class
    table.  A string outside the classes is *invalid* and loses to every valid one: ``P(invalid ≻ valid) =
    0``, ``P(valid ≻ invalid) = 1``, and two invalid strings tie at ``1/2``.  With these rules ``P + P^T = 1``
    holds on all strings, and the equilibrium over strings is the class-level equilibrium.

    Args:
        classes: ``{response: class_id}`` shared by all prompts, or ``{prompt: {response: class_id}}``.
            Class ids of a table run ``0..k-1``; several strings may share a class.
        matrices: one ``(k, k)`` preference matrix shared by all prompts, or ``{prompt: (k, k) matrix}``.
            Each must satisfy ``P + P^T = 1``.
        normalize: applied to response strings and class keys before lookup: a callable, a dotted import
            path, or one of ``"strip"`` (default), ``"lower"`` (strip + lower-case), ``"casefold"``,
            ``"none"``.

    Prompts are matched exactly (no normalisation) when ``classes`` or ``matrices`` is per prompt.

    Examples:
        >>> from nashalign.oracles import ClassMatrixOracle
        >>> rps = [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]
        >>> oracle = ClassMatrixOracle({"rock": 0, "paper": 1, "scissors": 2}, rps)
        >>> oracle(["play"] * 3, ["paper ", "rock", "lizard"], ["rock", "scissors", "rock"]).tolist()
        [1.0, 1.0, 0.0]
    """

    def __init__(
        self,
        classes: Mapping[str, int] | Mapping[str, Mapping[str, int]],
        matrices: Any,
        normalize: Callable[[str], str] | str | None = "strip",
        name: str | None = None,
    ) -> None:
        classes = _plain(classes)
        matrices = _plain(matrices)
        self.normalize = _normalizer(normalize)
        if not isinstance(classes, Mapping) or not classes:
            raise TypeError("classes must be a non-empty dict {response: class_id} or {prompt: {response: id}}.")
        per_prompt_classes = all(isinstance(v, Mapping) for v in classes.values())
        if not per_prompt_classes and any(isinstance(v, Mapping) for v in classes.values()):
            raise TypeError("classes mixes {response: id} and {prompt: {response: id}} entries; use one form.")
        per_prompt_matrices = isinstance(matrices, Mapping)
        self.per_prompt = per_prompt_classes or per_prompt_matrices

        tables: dict[Any, dict[str, int]]
        if per_prompt_classes:
            tables = {p: self._table(t, f"prompt {p!r}") for p, t in classes.items()}
        else:
            tables = {None: self._table(classes, "the shared classes")}
        if per_prompt_matrices:
            prompts = list(matrices.keys())
            if per_prompt_classes and set(prompts) != set(tables):
                missing = sorted(set(tables) ^ set(prompts), key=str)[:5]
                raise ValueError(
                    f"ClassMatrixOracle: per-prompt classes and matrices must cover the same prompts; these "
                    f"appear in only one of them: {missing}."
                )
        else:
            prompts = list(tables.keys())

        self._prompt_ids: dict[Any, int] = {p: m for m, p in enumerate(prompts)}
        self._tables = tables
        ks = {p: self._num_classes(tables[p if per_prompt_classes else None]) for p in prompts}
        K = max(ks.values())
        # Padded (M, K+1, K+1) tensor: slot K is "invalid", which loses to every class and ties with itself.
        big = torch.full((len(prompts), K + 1, K + 1), 0.5, dtype=torch.float64)
        for m, p in enumerate(prompts):
            k = ks[p]
            mat = matrices[p] if per_prompt_matrices else matrices
            big[m, :k, :k] = _class_matrix(mat, k, f"prompt {p!r}" if p is not None else "all prompts")
            big[m, :, K] = 1.0
            big[m, K, :] = 0.0
            big[m, K, K] = 0.5
        self._big = big
        self._invalid = K
        self.num_classes = K
        self.name = name or f"ClassMatrixOracle(k={K}{f', {len(prompts)} prompts' if self.per_prompt else ''})"

    def __repr__(self) -> str:
        return self.name

    def _table(self, table: Mapping[str, int], label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for s, c in table.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                raise ValueError(f"ClassMatrixOracle: class ids must be integers >= 0; {label} maps {s!r} to {c!r}.")
            key = self.normalize(str(s))
            if key in out and out[key] != c:
                raise ValueError(
                    f"ClassMatrixOracle: {label} maps {s!r} (normalised {key!r}) to both {out[key]} and {c}."
                )
            out[key] = int(c)
        return out

    @staticmethod
    def _num_classes(table: Mapping[str, int]) -> int:
        ids = sorted(set(table.values()))
        if ids != list(range(len(ids))):
            raise ValueError(f"ClassMatrixOracle: class ids must be 0..k-1 with none skipped, got {ids}.")
        return len(ids)

    def _prompt_id(self, prompt: Any) -> int:
        if not self.per_prompt:
            return 0
        try:
            return self._prompt_ids[prompt]
        except (KeyError, TypeError):
            known = ", ".join(describe_item(p, 40) for p in list(self._prompt_ids)[:3])
            raise OracleError(
                f"{self.name}: no classes/matrix for prompt {describe_item(prompt)}; known prompts include "
                f"{known} ({len(self._prompt_ids)} in all). Prompts are matched exactly."
            ) from None

    def _table_for(self, prompt: Any) -> dict[str, int]:
        return self._tables[prompt] if None not in self._tables else self._tables[None]

    def class_of(self, response: str, prompt: Any = None) -> int:
        """The class id of ``response`` (after ``normalize``), or ``-1`` when it is outside the classes.

        ``prompt`` is needed only when classes are given per prompt.
        """
        if None not in self._tables and prompt not in self._tables:
            self._prompt_id(prompt)  # raises the helpful error
            raise OracleError(f"{self.name}: no class table for prompt {describe_item(prompt)}.")
        return self._table_for(prompt).get(self.normalize(str(response)), -1)

    def classify(self, prompts: Sequence[Any], responses: Sequence[str]) -> torch.Tensor:
        """Class ids of ``responses`` (``-1`` for strings outside the classes), shape ``(B,)`` long."""
        return torch.tensor([self.class_of(r, p) for p, r in zip(prompts, responses)], dtype=torch.long)

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        batch_len(prompts, first, second, self.name)
        m_ids, a_ids, b_ids = [], [], []
        for p, a, b in zip(prompts, first, second):
            m_ids.append(self._prompt_id(p))
            ca, cb = self.class_of(a, p), self.class_of(b, p)
            a_ids.append(self._invalid if ca < 0 else ca)
            b_ids.append(self._invalid if cb < 0 else cb)
        m = torch.tensor(m_ids, dtype=torch.long)
        return self._big[m, torch.tensor(a_ids, dtype=torch.long), torch.tensor(b_ids, dtype=torch.long)]
