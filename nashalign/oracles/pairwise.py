"""Pairwise classifiers: one model reads the prompt and *both* responses (PairRM-like).

Unlike a reward model, a pairwise classifier can express intransitive (cyclic) preferences, which is the
case Nash learning exists for.  It usually has a position bias (``P(a ≻ b) + P(b ≻ a) != 1``); wrap it in
:func:`~nashalign.oracles.wrappers.symmetrize` to remove it exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from nashalign.oracles.base import Batch, OracleBase, as_list, batch_len

__all__ = ["PairwiseClassifierOracle", "DEFAULT_PAIR_TEMPLATE"]

#: Default text fed to the classifier (``str.format`` with ``prompt``, ``first``, ``second``).
DEFAULT_PAIR_TEMPLATE = "Prompt: {prompt}\n\nResponse A: {first}\n\nResponse B: {second}"


class PairwiseClassifierOracle(OracleBase):
    """``P(a ≻ b | x)`` read from a sequence-classification model over the text ``template(x, a, b)``.

    Args:
        model: a ``transformers`` ``*ForSequenceClassification`` model.  With one output the probability is
            ``sigmoid(logit)``; with two it is ``softmax(logits)[first_wins_label]``.
        tokenizer: its tokenizer (a padding token is added when missing).
        template: ``str.format`` pattern with ``{prompt}``, ``{first}``, ``{second}``
            (default :data:`DEFAULT_PAIR_TEMPLATE`).
        first_wins_label: for two-label models, the label meaning "the first response is better"
            (default 0, the index of the winning response).
        batch_size: pairs per forward pass; max_length: truncation length in tokens (``None``: none).
        device: where to run (``None``: the model's current device).

    The oracle is *not* symmetric by itself; ``symmetrize(oracle)`` is.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: str = DEFAULT_PAIR_TEMPLATE,
        first_wins_label: int = 0,
        batch_size: int = 16,
        max_length: int | None = 512,
        device: str | torch.device | None = None,
        name: str | None = None,
    ) -> None:
        from nashalign.oracles import _hf

        self.tokenizer = _hf.ensure_pad_token(tokenizer)
        self.model, self.device = _hf.prepare_model(model, self.tokenizer, device)
        num_labels = int(getattr(self.model.config, "num_labels", 1))
        if num_labels not in (1, 2):
            raise ValueError(
                f"A pairwise classifier needs 1 output (a logit for 'first wins') or 2 (softmax over which "
                f"response wins); this model has num_labels={num_labels}."
            )
        if num_labels == 2 and first_wins_label not in (0, 1):
            raise ValueError(f"first_wins_label must be 0 or 1, got {first_wins_label}.")
        _hf.check_template(template)
        self.num_labels = num_labels
        self.template = template
        self.first_wins_label = int(first_wins_label)
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.name = name or f"PairwiseClassifierOracle({type(self.model).__name__})"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        tokenizer: Any = None,
        template: str = DEFAULT_PAIR_TEMPLATE,
        first_wins_label: int = 0,
        batch_size: int = 16,
        max_length: int | None = 512,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> PairwiseClassifierOracle:
        """Load with ``AutoModelForSequenceClassification.from_pretrained(name_or_path)``."""
        from nashalign.oracles import _hf

        model, tok = _hf.load_pretrained(
            "AutoModelForSequenceClassification", name_or_path, tokenizer, dtype, model_kwargs
        )
        return cls(
            model,
            tok,
            template=template,
            first_wins_label=first_wins_label,
            batch_size=batch_size,
            max_length=max_length,
            device=_hf.resolve_device(device),
            name=name or f"PairwiseClassifierOracle({name_or_path!r})",
        )

    def format(self, prompt: str, first: str, second: str) -> str:
        """The text the classifier reads for one pair."""
        return self.template.format(prompt=prompt, first=first, second=second)

    @torch.no_grad()
    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        from nashalign.oracles import _hf

        batch_len(prompts, first, second, self.name)  # the three inputs must have the same length
        texts = [self.format(p, a, b) for p, a, b in zip(as_list(prompts), as_list(first), as_list(second))]
        out = []
        for enc in _hf.encoded_batches(self.tokenizer, texts, self.device, self.max_length, self.batch_size):
            logits = self.model(**enc).logits.float()
            if self.num_labels == 1:
                out.append(torch.sigmoid(logits[:, 0]))
            else:
                out.append(torch.softmax(logits, dim=-1)[:, self.first_wins_label])
        return torch.cat(out) if out else torch.zeros(0, device=self.device)
