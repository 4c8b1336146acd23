"""Bradley-Terry oracles from a reward model: ``P(a ≻ b | x) = sigmoid((r(x, a) - r(x, b)) / T)``.

A reward model can only express *transitive* preferences (``P`` is then Bradley-Terry): it is the oracle
TRL's Nash-MD is limited to, kept here for comparison and for reward models users already have.  The
scorer is any function ``r(prompts, responses) -> (B,)``; :meth:`RewardModelOracle.from_pretrained` builds one
from a Hugging Face sequence-classification model with one output (the reward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from nashalign.oracles.base import (
    Batch,
    OracleBase,
    OracleError,
    batch_len,
    keys_of,
    oracle_name,
    to_prob_tensor,
    unique_items,
)

__all__ = ["RewardModelOracle", "SequenceClassifierScorer"]

ScoreFn = Callable[[Sequence[Any], Sequence[Any]], Any]


class SequenceClassifierScorer:
    """``r(x, y)``: the single logit of a sequence-classification model on the text of ``(x, y)``.

    Args:
        model: a ``transformers`` ``*ForSequenceClassification`` model with ``num_labels = 1`` (or pick a
            column with ``label``).
        tokenizer: its tokenizer; a padding token is added (the EOS token) when missing.
        template: ``str.format`` pattern with ``{prompt}`` and ``{response}``.  ``None`` uses the
            tokenizer's chat template (user = prompt, assistant = response) when it has one, otherwise
            ``"{prompt}\\n\\n{response}"``.
        label: which output column is the reward (default 0).
        batch_size: sequences per forward pass; max_length: truncation length in tokens (``None``: none).
        device: where to run (``None``: the model's current device).

    Batches are right-padded and scored under ``torch.no_grad``; scores come back as float32 on the
    model's device.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: str | None = None,
        label: int = 0,
        batch_size: int = 16,
        max_length: int | None = 512,
        device: str | torch.device | None = None,
    ) -> None:
        from nashalign.oracles import _hf

        self.tokenizer = _hf.ensure_pad_token(tokenizer)
        self.model, self.device = _hf.prepare_model(model, self.tokenizer, device)
        self.template = template
        self.label = int(label)
        self.batch_size = int(batch_size)
        self.max_length = max_length

    def format(self, prompt: str, response: str) -> str:
        """The text the model scores for ``(prompt, response)``."""
        if self.template is not None:
            return self.template.format(prompt=prompt, response=response)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{prompt}\n\n{response}"

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        from nashalign.oracles import _hf

        texts = [self.format(p, r) for p, r in zip(prompts, responses)]
        out = []
        for enc in _hf.encoded_batches(self.tokenizer, texts, self.device, self.max_length, self.batch_size):
            logits = self.model(**enc).logits
            if logits.ndim != 2 or not 0 <= self.label < logits.shape[-1]:
                raise ValueError(
                    f"The reward model returned logits of shape {tuple(logits.shape)}; expected (B, num_labels) "
                    f"with label {self.label} in range. Load a sequence-classification model with num_labels=1."
                )
            out.append(logits[:, self.label].float())
        if not out:
            return torch.zeros(0, device=self.device)
        return torch.cat(out)


class RewardModelOracle(OracleBase):
    """Bradley-Terry oracle ``P(a ≻ b | x) = sigmoid((r(x, a) - r(x, b)) / temperature)``.

    Args:
        score_fn: ``r(prompts, responses) -> (B,)`` scores (a tensor, array or list); e.g. a
            :class:`SequenceClassifierScorer`, or any Python function.
        temperature: divides the reward difference (``> 0``); a reward model trained with the usual
            ``-log sigmoid(r_w - r_l)`` loss wants 1.
        name: used in error messages.

    Each call scores every distinct ``(prompt, response)`` of the batch once (``2B`` at most), so a
    symmetrised call costs no more model work than a plain one.  The result is consistent by
    construction: ``P(a ≻ b) + P(b ≻ a) = 1`` and ``P(a ≻ a) = 1/2``.

    Examples:
        >>> from nashalign.oracles import RewardModelOracle
        >>> oracle = RewardModelOracle(lambda x, ys: [float(len(y)) for y in ys])   # longer is better
        >>> round(oracle(["q"], ["abc"], ["a"]).item(), 4)   # sigmoid(3 - 1)
        0.8808
    """

    def __init__(self, score_fn: ScoreFn, temperature: float = 1.0, name: str | None = None) -> None:
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable r(prompts, responses), got {type(score_fn).__name__}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.score_fn = score_fn
        self.temperature = float(temperature)
        self.name = name or f"RewardModelOracle({oracle_name(score_fn)})"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        tokenizer: Any = None,
        template: str | None = None,
        label: int = 0,
        temperature: float = 1.0,
        batch_size: int = 16,
        max_length: int | None = 512,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> RewardModelOracle:
        """Load a reward model with ``AutoModelForSequenceClassification.from_pretrained(name_or_path)``.

        ``tokenizer`` is a tokenizer or a path (default: ``name_or_path``); ``dtype`` e.g. ``"bfloat16"``;
        ``model_kwargs`` go to ``from_pretrained``.  ``device=None`` picks CUDA when available.
        """
        from nashalign.oracles import _hf

        model, tok = _hf.load_pretrained(
            "AutoModelForSequenceClassification", name_or_path, tokenizer, dtype, model_kwargs
        )
        scorer = SequenceClassifierScorer(
            model,
            tok,
            template=template,
            label=label,
            batch_size=batch_size,
            max_length=max_length,
            device=_hf.resolve_device(device),
        )
        return cls(scorer, temperature=temperature, name=name or f"RewardModelOracle({name_or_path!r})")

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> torch.Tensor:
        """The rewards ``r(x_i, y_i)``, shape ``(B,)``."""
        r = to_prob_tensor(self.score_fn(prompts, responses), self.name)
        if r.shape != (len(responses),):
            raise OracleError(
                f"{self.name}: the scorer returned shape {tuple(r.shape)} for {len(responses)} responses; it "
                "must return one score per (prompt, response)."
            )
        return r

    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        B = batch_len(prompts, first, second, self.name)
        uniq_p, uniq_r, ia, ib = unique_items(keys_of(prompts), keys_of(first), keys_of(second))
        if B == 0:
            return torch.zeros(0)
        r = self.score(uniq_p, uniq_r)
        ia_t = torch.tensor(ia, device=r.device)
        ib_t = torch.tensor(ib, device=r.device)
        return torch.sigmoid((r[ia_t] - r[ib_t]) / self.temperature)
