"""Tiny, locally built tokenizers and transformer models.

Nothing here downloads: a byte-level BPE tokenizer is trained with the ``tokenizers`` library on
text you give it, and models are built ``from_config`` with random weights.  Used by the
known-equilibrium language-model benchmark, by tests (saved to disk and reloaded through the real
``from_pretrained`` code path), and by anyone who wants a seconds-long smoke run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 256, min_frequency: int = 1) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    The tokenizer has ``<pad>``, ``<s>``, ``</s>`` and ``<unk>`` special tokens and pads on the left
    (what batched generation with a causal LM needs).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **SPECIAL_TOKENS)
    return fast


def build_causal_lm(
    tokenizer: Any,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_positions: int = 128,
    seed: int = 0,
    arch: str = "llama",
) -> Any:
    """A randomly initialised causal LM sized for ``tokenizer`` (``arch``: ``"llama"`` or ``"gpt2"``)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "llama":
        cfg = LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            **common,
        )
    elif arch == "gpt2":
        cfg = GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=max_positions, **common)
    else:
        raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}.")
    return AutoModelForCausalLM.from_config(cfg)


def build_sequence_classifier(
    tokenizer: Any, num_labels: int = 1, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, seed: int = 0
) -> Any:
    """A randomly initialised sequence-classification model (reward model with ``num_labels=1``)."""
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        num_labels=num_labels,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForSequenceClassification.from_config(cfg)


def build_scratch_policy(
    prompts: Sequence[str] | None = None,
    *,
    arch: str = "qwen2",
    vocab_size: int = 8192,
    tokenizer_texts: Sequence[str] | None = None,
    dtype: str | None = None,
    device: str | None = None,
    seed: int = 0,
    lora: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    """A randomly initialised causal LM (e.g. a Qwen2-0.5B-shaped config) with a locally trained BPE tokenizer.

    For throughput runs where no checkpoint can be downloaded: the tokenizer is trained on
    ``tokenizer_texts`` (default: the prompts) with :func:`nashalign.llm.tiny.build_tokenizer`, the model is
    ``AutoModelForCausalLM.from_config(<arch>Config(**config))``.  ``arch``: ``"qwen2"`` or ``"llama"``;
    ``lora``: ``peft.LoraConfig`` kwargs (the reference is then the adapter-off base); ``device`` default: this
    process's Accelerate device.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from nashalign.llm.policy import CausalLMPolicy, default_device, resolve_dtype

    texts = list(tokenizer_texts or prompts or [])
    if not texts:
        raise ValueError("build_scratch_policy needs prompts or tokenizer_texts to train its tokenizer on.")
    classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if arch not in classes:
        raise ValueError(f"arch must be one of {sorted(classes)}, got {arch!r}.")
    tok = build_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    cfg = classes[arch](
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **config,
    )
    torch_dtype = resolve_dtype(dtype)
    device = torch.device(device or default_device())
    with device:  # initialise the weights where they will live (a 0.5B model initialises in seconds on a GPU)
        model = AutoModelForCausalLM.from_config(cfg, **({"dtype": torch_dtype} if torch_dtype else {}))
    return CausalLMPolicy(model, tok, use_chat_template=False, device=device, lora=lora)
