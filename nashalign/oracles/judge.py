"""An LLM judge read from next-token probabilities (no generation, no parsing, no -1 failures).

The judge model sees a prompt asking which of two responses is better and must answer ``A`` or ``B``.
Instead of sampling an answer we read the next-token logits ``z`` and return

    P(a ≻ b | x) = exp(z_A) / (exp(z_A) + exp(z_B)),

where ``z_A`` is the log-sum-exp of the logits of every single-token spelling of the first choice (``"A"``,
``" A"``) and likewise for ``B``.  The probability is smooth, batched and always defined.  Judges have a
position bias: use :func:`~nashalign.oracles.wrappers.symmetrize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nashalign.oracles.base import Batch, OracleBase, as_list, batch_len

__all__ = ["LLMJudgeOracle", "DEFAULT_JUDGE_TEMPLATE"]

#: Default judge prompt (``str.format`` with ``prompt``, ``first``, ``second``); the answer follows it.
DEFAULT_JUDGE_TEMPLATE = (
    "Which response answers the instruction better?\n\n"
    "Instruction: {prompt}\n\n"
    "Response A: {first}\n\n"
    "Response B: {second}\n\n"
    "Answer with a single letter, A or B.\nAnswer:"
)


class LLMJudgeOracle(OracleBase):
    """``P(first ≻ second | prompt)`` = softmax over the judge's next-token logits of ``"A"`` and ``"B"``.

    Args:
        model: a ``transformers`` causal LM (``*ForCausalLM``).
        tokenizer: its tokenizer (a padding token is added when missing).
        template: ``str.format`` pattern with ``{prompt}``, ``{first}``, ``{second}``; the model's next
            token after it is the answer (default :data:`DEFAULT_JUDGE_TEMPLATE`).
        choices: the two answers (default ``("A", "B")``); each must have a spelling that is one token
            (checked with and without a leading space; all single-token spellings are pooled).
        use_chat_template: wrap the filled template as a user turn and add the generation prompt;
            ``None`` does so when the tokenizer has a chat template.
        batch_size: pairs per forward pass; max_length: longest accepted judge prompt in tokens (longer ones
            raise rather than silently lose the question; ``None``: no limit).
        device: where to run (``None``: the model's current device).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: str = DEFAULT_JUDGE_TEMPLATE,
        choices: Sequence[str] = ("A", "B"),
        use_chat_template: bool | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        name: str | None = None,
    ) -> None:
        from nashalign.oracles import _hf

        _hf.check_template(template)
        if len(choices) != 2 or choices[0] == choices[1]:
            raise ValueError(f"choices must be two different answers, got {choices!r}.")
        self.tokenizer = _hf.ensure_pad_token(tokenizer)
        self.model, self.device = _hf.prepare_model(model, self.tokenizer, device)
        self.template = template
        self.choices = (str(choices[0]), str(choices[1]))
        has_chat = bool(getattr(self.tokenizer, "chat_template", None))
        if use_chat_template and not has_chat:
            raise ValueError("use_chat_template=True but the tokenizer has no chat_template.")
        self.use_chat_template = has_chat if use_chat_template is None else bool(use_chat_template)
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.choice_ids = [self._token_ids(c) for c in self.choices]
        if set(self.choice_ids[0]) & set(self.choice_ids[1]):
            raise ValueError(f"choices {self.choices!r} share a token; pick answers that tokenise differently.")
        self.name = name or f"LLMJudgeOracle({type(self.model).__name__})"

    def _token_ids(self, choice: str) -> list[int]:
        ids: list[int] = []
        for spelling in dict.fromkeys([choice, " " + choice.lstrip()]):
            toks = self.tokenizer.encode(spelling, add_special_tokens=False)
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(int(toks[0]))
        if not ids:
            raise ValueError(
                f"The judge answer {choice!r} is not a single token for this tokenizer (neither {choice!r} nor "
                f"{' ' + choice!r}); choose choices that are, e.g. ('A', 'B') or ('1', '2')."
            )
        return ids

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        tokenizer: Any = None,
        template: str = DEFAULT_JUDGE_TEMPLATE,
        choices: Sequence[str] = ("A", "B"),
        use_chat_template: bool | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> LLMJudgeOracle:
        """Load the judge with ``AutoModelForCausalLM.from_pretrained(name_or_path)``."""
        from nashalign.oracles import _hf

        model, tok = _hf.load_pretrained("AutoModelForCausalLM", name_or_path, tokenizer, dtype, model_kwargs)
        return cls(
            model,
            tok,
            template=template,
            choices=tuple(choices),
            use_chat_template=use_chat_template,
            batch_size=batch_size,
            max_length=max_length,
            device=_hf.resolve_device(device),
            name=name or f"LLMJudgeOracle({name_or_path!r})",
        )

    def format(self, prompt: str, first: str, second: str) -> str:
        """The full text the judge reads for one pair (its next token is the answer)."""
        text = self.template.format(prompt=prompt, first=first, second=second)
        if self.use_chat_template:
            messages = [{"role": "user", "content": text}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text

    @torch.no_grad()
    def __call__(self, prompts: Batch, first: Batch, second: Batch) -> torch.Tensor:
        from nashalign.oracles import _hf

        B = batch_len(prompts, first, second, self.name)
        texts = [self.format(p, a, b) for p, a, b in zip(as_list(prompts), as_list(first), as_list(second))]
        ids_a = torch.tensor(self.choice_ids[0], device=self.device)
        ids_b = torch.tensor(self.choice_ids[1], device=self.device)
        add_special = not self.use_chat_template  # a rendered chat template already holds its BOS
        out = []
        for start, stop in _hf.chunks(B, self.batch_size):
            enc = _hf.encode(self.tokenizer, texts[start:stop], self.device, None, add_special_tokens=add_special)
            lengths = enc["attention_mask"].sum(-1)
            if self.max_length is not None and int(lengths.max()) > self.max_length:
                i = int(lengths.argmax()) + start
                raise ValueError(
                    f"{self.name}: judge prompt #{i} has {int(lengths.max())} tokens > max_length="
                    f"{self.max_length}; truncating would cut the question. Shorten the inputs or raise max_length."
                )
            logits = self.model(**enc).logits  # (b, L, V)
            last = logits[torch.arange(logits.shape[0], device=self.device), lengths - 1].float()
            za = torch.logsumexp(last[:, ids_a], dim=-1)
            zb = torch.logsumexp(last[:, ids_b], dim=-1)
            out.append(torch.sigmoid(za - zb))
        return torch.cat(out) if out else torch.zeros(0, device=self.device)
