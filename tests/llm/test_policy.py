"""CausalLMPolicy: log-probabilities, generation (incl. the token-level mixture), reference, snapshots."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nashalign.llm.policy import CausalLMPolicy, Samples, mixture_logprobs, process_logprobs

PROMPTS = ["Rock, paper or scissors?", "Pick a color:", "Pick a number:"]


def hand_logprobs(model, samples: Samples) -> torch.Tensor:
    """sum_k log softmax(logits)[y_k] over the response, one unpadded sequence at a time."""
    model.eval()
    out = []
    for i in range(len(samples)):
        p = samples.prompt_ids[i][samples.prompt_mask[i].bool()]
        r = samples.response_ids[i][samples.response_mask[i].bool()]
        with torch.no_grad():
            logits = model(torch.cat([p, r])[None]).logits[0].float()
        total = 0.0
        for j in range(len(r)):
            total += torch.log_softmax(logits[len(p) - 1 + j], dim=-1)[r[j]].item()
        out.append(total)
    return torch.tensor(out)


def test_sequence_logprobs_equals_hand_loop(load_policy, random_lm_dir):
    pol = load_policy(random_lm_dir)
    s = pol.encode(PROMPTS, ["rock", "green blue red", "three one"])  # different lengths -> padding
    assert s.prompt_mask.min() == 0 and s.response_mask.min() == 0  # both paddings exercised
    lp = pol.sequence_logprobs(s)
    assert lp.dtype == torch.float32 and lp.shape == (3,)
    torch.testing.assert_close(lp, hand_logprobs(pol.model, s), atol=1e-5, rtol=0)
    # chunked evaluation is the same computation
    torch.testing.assert_close(pol.sequence_logprobs(s, batch_size=1), lp, atol=1e-6, rtol=0)


def test_sequence_logprobs_masks_padding(load_policy, random_lm_dir):
    pol = load_policy(random_lm_dir)
    s = pol.encode(PROMPTS, ["rock", "green", "three"])
    lp = pol.sequence_logprobs(s)
    pad = pol.pad_token_id
    padded = Samples(
        prompt_index=s.prompt_index,
        prompt_ids=F.pad(s.prompt_ids, (5, 0), value=pad),
        prompt_mask=F.pad(s.prompt_mask, (5, 0), value=0),
        response_ids=F.pad(s.response_ids, (0, 4), value=pad),
        response_mask=F.pad(s.response_mask, (0, 4), value=0),
        texts=s.texts,
    )
    torch.testing.assert_close(pol.sequence_logprobs(padded), lp, atol=1e-5, rtol=0)
    # the prompt matters (it is conditioned on) but is not scored: changing it changes the value, and a
    # response-only change of a masked position does not
    garbage = padded.response_ids.clone()
    garbage[:, -1] = 7
    padded.response_ids = garbage
    torch.testing.assert_close(pol.sequence_logprobs(padded), lp, atol=1e-5, rtol=0)


def test_normalize_divides_by_length(load_policy, random_lm_dir):
    pol = load_policy(random_lm_dir)
    s = pol.encode(PROMPTS, ["rock", "green blue red", "three one"])
    raw = pol.sequence_logprobs(s)
    norm = pol.sequence_logprobs(s, normalize=True)
    torch.testing.assert_close(norm, raw / s.response_mask.sum(-1).float(), atol=1e-6, rtol=0)
    assert s.response_mask.sum(-1).unique().numel() > 1


def test_float32_logprobs_under_bf16(load_policy, random_lm_dir):
    pol16 = load_policy(random_lm_dir, dtype="bfloat16")
    assert next(pol16.model.parameters()).dtype == torch.bfloat16
    s = pol16.encode(PROMPTS, ["rock", "green blue", "three"])
    lp = pol16.sequence_logprobs(s)
    assert lp.dtype == torch.float32
    # equals the float32 log-softmax of the bf16 logits (not a bf16 log-softmax)
    torch.testing.assert_close(lp, hand_logprobs(pol16.model, s), atol=1e-4, rtol=0)
    lp32 = load_policy(random_lm_dir).sequence_logprobs(s)
    assert (lp - lp32).abs().max() < 0.2


def test_grad_flag_keeps_graph(load_policy):
    pol = load_policy()
    s = pol.encode(PROMPTS, ["rock", "red", "one"])
    assert not pol.sequence_logprobs(s).requires_grad
    lp = pol.sequence_logprobs(s, grad=True)
    lp.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pol.model.parameters())
    with pytest.raises(ValueError, match="reference is frozen"):
        pol.sequence_logprobs(s, model="reference", grad=True)


def test_generate_layout_eos_and_masks(load_policy, synthetic_task):
    pol = load_policy()  # the warmed-up LM: answers one word then EOS
    k = 4
    s = pol.generate(PROMPTS, k, max_new_tokens=6, seed=0)
    assert len(s) == 3 * k
    assert s.prompt_index.tolist() == [i for i in range(3) for _ in range(k)]
    assert s.prompts == [p for p in PROMPTS for _ in range(k)]
    enc, _ = pol.encode_prompts(PROMPTS)
    torch.testing.assert_close(s.prompt_ids, enc[s.prompt_index])  # prompt-major rows
    eos = pol.tokenizer.eos_token_id
    for i in range(len(s)):
        m = s.response_mask[i]
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # 1 up to ..., 0 after
        if s.finished[i]:
            assert s.response_ids[i, n - 1] == eos  # ... and including EOS
            assert (s.response_ids[i, : n - 1] != eos).all()
        assert (s.response_ids[i, n:] == pol.pad_token_id).all()
        assert s[i] == s.texts[i] and "</s>" not in s[i]
    assert s.finished.float().mean() > 0.9
    valid = {r for rs in synthetic_task.responses for r in rs}
    assert sum(t in valid for t in s.texts) >= 0.9 * len(s)
    sub = s.select(torch.tensor([5, 0]))
    assert sub.texts == [s.texts[5], s.texts[0]] and sub.prompt_index.tolist() == [1, 0]


def test_generate_truncation_without_eos(load_policy, random_lm_dir):
    pol = load_policy(random_lm_dir)
    s = pol.generate(PROMPTS, 2, max_new_tokens=5, seed=0, top_k=20)
    assert s.response_ids.shape[1] <= 5
    unfinished = ~s.finished
    assert unfinished.any()
    assert (s.response_mask[unfinished].sum(-1) == s.response_ids.shape[1]).all()


def test_generate_is_deterministic_under_seed(load_policy, random_lm_dir):
    pol = load_policy(random_lm_dir)
    a = pol.generate(PROMPTS, 3, max_new_tokens=8, seed=123)
    b = pol.generate(PROMPTS, 3, max_new_tokens=8, generator=torch.Generator().manual_seed(123))
    c = pol.generate(PROMPTS, 3, max_new_tokens=8, seed=124)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert not torch.equal(a.response_ids, c.response_ids)
    # decoding in chunks of rows draws the same stream when rows are independent of batch size for greedy
    g1 = pol.generate(PROMPTS, 2, max_new_tokens=6, do_sample=False)
    g2 = pol.generate(PROMPTS, 2, max_new_tokens=6, do_sample=False, batch_size=4)
    assert g1.texts == g2.texts


def test_mixture_logprobs_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 11, generator=g) * 3 + 5  # arbitrary offsets: cancel in both forms
    b = torch.randn(4, 11, generator=g) * 2 - 7
    for w in (0.0, 0.125, 0.5, 0.9, 1.0):
        got = mixture_logprobs(a, b, w)
        mixed = (1 - w) * torch.log_softmax(a, -1) + w * torch.log_softmax(b, -1)
        want = mixed - torch.logsumexp(mixed, -1, keepdim=True)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        # TRL's GeometricMixtureWrapper form on raw logits is the same distribution
        torch.testing.assert_close(got, torch.log_softmax(w * b + (1 - w) * a, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(mixture_logprobs(a, b, 0.0), torch.log_softmax(a, -1))
    torch.testing.assert_close(mixture_logprobs(a, b, 1.0), torch.log_softmax(b, -1))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        mixture_logprobs(a, b, 1.5)


def test_process_logprobs_filters():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    k2 = process_logprobs(logp, top_k=2).exp()
    torch.testing.assert_close(k2, torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))
    p = process_logprobs(logp, top_p=0.7).exp()  # smallest set with mass >= 0.7: {0, 1}
    torch.testing.assert_close(p, torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))
    p = process_logprobs(logp, top_p=0.4).exp()  # the top token alone already has 0.5
    torch.testing.assert_close(p, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    t = process_logprobs(logp, temperature=0.5).exp()
    want = torch.tensor([[0.25, 0.0625, 0.0225, 0.01]])
    torch.testing.assert_close(t, want / want.sum())
    with pytest.raises(ValueError, match="temperature"):
        process_logprobs(logp, temperature=0.0)


def _uncached_greedy_mixture(pol: CausalLMPolicy, ref_model, prompts, w: float, steps: int) -> torch.Tensor:
    """Reference implementation: re-run both models over the whole prefix at every step (TRL-style)."""
    ids, mask = pol.encode_prompts(prompts)
    eos = pol.tokenizer.eos_token_id
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out = []
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            a = pol.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
            b = ref_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
        mixed = (1 - w) * torch.log_softmax(a, -1) + w * torch.log_softmax(b, -1)
        tok = torch.where(done, torch.full((len(prompts),), pol.pad_token_id), mixed.argmax(-1))
        out.append(tok)
        done |= tok == eos
        ids = torch.cat([ids, tok[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        if done.all():
            break
    return torch.stack(out, 1)


def test_kv_cached_mixture_equals_uncached(tiny_lm_dir, random_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(random_lm_dir)
    policy_model = AutoModelForCausalLM.from_pretrained(random_lm_dir).eval()
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()  # a different model as mu
    pol = CausalLMPolicy(policy_model, tok, reference_model=ref_model)
    prompts = PROMPTS + ["Pick"]
    for w in (0.0, 0.3, 0.7):
        got = pol.generate(prompts, 1, max_new_tokens=10, do_sample=False, mixture=w)
        want = _uncached_greedy_mixture(pol, ref_model, prompts, w, 10)
        n = min(got.response_ids.shape[1], want.shape[1])
        assert torch.equal(got.response_ids[:, :n], want[:, :n]), w
        assert got.response_ids.shape[1] == want.shape[1]
    # w = 0 greedy also equals transformers' own generate (independent cached implementation)
    ids, mask = pol.encode_prompts(prompts)
    hf = policy_model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id
    )[:, ids.shape[1] :]
    ours = pol.generate(prompts, 1, max_new_tokens=10, do_sample=False)
    n = min(hf.shape[1], ours.response_ids.shape[1])
    mine = ours.response_ids[:, :n].masked_fill(ours.response_mask[:, :n] == 0, tok.pad_token_id)
    assert torch.equal(mine, hf[:, :n].masked_fill(ours.response_mask[:, :n] == 0, tok.pad_token_id))


def test_mixture_endpoints_sample_policy_and_reference(tiny_lm_dir, random_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(random_lm_dir)
    pol = CausalLMPolicy(
        AutoModelForCausalLM.from_pretrained(random_lm_dir),
        tok,
        reference_model=AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
    )
    kw = dict(max_new_tokens=6, seed=7)
    assert pol.generate(PROMPTS, 4, mixture=0.0, **kw).texts == pol.generate(PROMPTS, 4, **kw).texts
    assert (
        pol.generate(PROMPTS, 4, mixture=1.0, **kw).texts
        == pol.generate(PROMPTS, 4, model_override="reference", **kw).texts
    )
    assert pol.generate(PROMPTS, 4, mixture=1.0, **kw).texts != pol.generate(PROMPTS, 4, **kw).texts


def test_lora_reference_is_base_and_snapshots_round_trip(load_policy, tiny_lm_dir):
    from transformers import AutoModelForCausalLM

    pol = load_policy(lora=dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    assert pol.is_peft
    s = pol.encode(PROMPTS, ["paper", "green", "three"])
    base_model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    base = hand_logprobs(base_model, s)
    snap0 = pol.snapshot()
    assert snap0 and all("lora" in name for name in snap0)  # adapter weights only
    opt = torch.optim.Adam(pol.parameters_to_train(), lr=5e-2)
    for _ in range(3):
        loss = -pol.sequence_logprobs(s, grad=True).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = pol.sequence_logprobs(s)
    assert (trained - base).abs().max() > 1e-2  # the adapter moved the policy
    torch.testing.assert_close(pol.sequence_logprobs(s, model="reference"), base, atol=1e-5, rtol=0)
    with pol.reference() as ref:
        assert ref is pol.model
    torch.testing.assert_close(pol.sequence_logprobs(s), trained)  # adapter back on after the block
    with pol.using(snap0):
        torch.testing.assert_close(pol.sequence_logprobs(s), base, atol=1e-5, rtol=0)
    torch.testing.assert_close(pol.sequence_logprobs(s), trained)
    snap1 = pol.snapshot(device="cpu")
    pol.load_snapshot(snap0)
    torch.testing.assert_close(pol.sequence_logprobs(s), base, atol=1e-5, rtol=0)
    pol.load_snapshot(snap1)
    torch.testing.assert_close(pol.sequence_logprobs(s), trained)
    with pytest.raises(KeyError, match="missing"):
        pol.load_snapshot({"nope": torch.zeros(1)})


def test_full_finetune_reference_is_frozen_initial_copy(load_policy):
    pol = load_policy()
    s = pol.encode(PROMPTS, ["paper", "green", "three"])
    before = pol.sequence_logprobs(s)
    opt = torch.optim.SGD(pol.parameters_to_train(), lr=0.5)  # freezes the reference copy
    loss = -pol.sequence_logprobs(s, grad=True).sum()
    loss.backward()
    opt.step()
    after = pol.sequence_logprobs(s)
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(pol.sequence_logprobs(s, model="reference"), before, atol=1e-6, rtol=0)
    with pol.reference() as ref:
        assert ref is not pol.model and not any(p.requires_grad for p in ref.parameters())


def test_reference_copy_after_training_raises(load_policy):
    pol = load_policy()
    with torch.no_grad():
        next(pol.model.parameters()).add_(1.0)  # trained without parameters_to_train()/freeze_reference()
    with pytest.raises(RuntimeError, match="freeze_reference"):
        with pol.reference():
            pass


def test_ema_update_and_separate_reference(load_policy, tiny_lm_dir, random_lm_dir):
    pol = load_policy(random_lm_dir, reference=tiny_lm_dir)
    s = pol.encode(PROMPTS, ["paper", "green", "three"])
    ref_lp = load_policy(tiny_lm_dir).sequence_logprobs(s)
    torch.testing.assert_close(pol.sequence_logprobs(s, model="reference"), ref_lp, atol=1e-6, rtol=0)
    ema = {k: torch.zeros_like(v) for k, v in pol.snapshot().items()}
    theta = pol.snapshot()
    pol.ema_update(ema, 0.25)
    for k in ema:
        torch.testing.assert_close(ema[k], 0.25 * theta[k])
    pol.ema_update(ema, 1.0)
    for k in ema:
        torch.testing.assert_close(ema[k], theta[k])


def test_from_pretrained_matches_in_memory_and_chat_template(tiny_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    mem = CausalLMPolicy(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), tok)
    loaded = CausalLMPolicy.from_pretrained(tiny_lm_dir, device="cpu")
    assert loaded.tokenizer.padding_side == "left" and loaded.device.type == "cpu"
    assert not loaded.use_chat_template
    s = loaded.encode(PROMPTS, ["rock", "red", "one"])
    torch.testing.assert_close(loaded.sequence_logprobs(s), mem.sequence_logprobs(s))

    # a tokenizer with a chat template uses it automatically; one without a pad token gets EOS
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    AutoModelForCausalLM.from_pretrained(tiny_lm_dir).save_pretrained(tmp_path)
    chat = CausalLMPolicy.from_pretrained(str(tmp_path), device="cpu")
    assert chat.use_chat_template
    assert chat.format_prompts(["hi"]) == ["<s>hi>"]
    assert chat.tokenizer.pad_token == chat.tokenizer.eos_token
    assert CausalLMPolicy.from_pretrained(str(tmp_path), use_chat_template=False).format_prompts(["hi"]) == ["hi"]


def test_clear_errors(load_policy):
    pol = load_policy()
    with pytest.raises(TypeError, match="single string"):
        pol.generate("Pick a color:", 2)
    with pytest.raises(ValueError, match="k must be"):
        pol.generate(PROMPTS, 0)
    with pytest.raises(ValueError, match="dtype"):
        load_policy(dtype="float8")
    with pytest.raises(ValueError, match="model must be"):
        pol.sequence_logprobs(pol.encode(PROMPTS, ["a", "b", "c"]), model="ref")


def test_importing_nashalign_does_not_import_transformers():
    code = (
        "import sys, nashalign, nashalign.llm; "
        "assert 'transformers' not in sys.modules, 'transformers imported'; "
        "nashalign.llm.Samples; assert 'nashalign.llm._decode' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lora_with_explicit_reference_uses_it(load_policy, tiny_lm_dir, random_lm_dir):
    pol = load_policy(tiny_lm_dir, lora=dict(r=2, lora_alpha=4, target_modules=["q_proj"]), reference=random_lm_dir)
    s = pol.encode(PROMPTS, ["paper", "green", "three"])
    want = load_policy(random_lm_dir).sequence_logprobs(s)
    torch.testing.assert_close(pol.sequence_logprobs(s, model="reference"), want, atol=1e-6, rtol=0)
    assert "separate model" in repr(pol)
