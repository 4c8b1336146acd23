"""HF-backed oracles, loaded through their real from_pretrained code from tiny models saved on disk."""

import math

import pytest
import torch

from nashalign.oracles import (
    DEFAULT_PAIR_TEMPLATE,
    GPMOracle,
    LLMJudgeOracle,
    PairwiseClassifierOracle,
    RewardModelOracle,
    check_oracle,
    symmetrize,
)

PROMPTS = ["what is two plus two?", "say hello", "name a colour", "say hello"]
FIRST = ["four", "hello there", "blue", "hi"]
SECOND = ["five", "goodbye", "blue", "hello there"]


def _load(kind, path):
    import transformers

    from nashalign.oracles._hf import load_tokenizer

    model = getattr(transformers, kind).from_pretrained(path).eval()
    return model, load_tokenizer(path)


# ----------------------------------------------------------------------------- reward model
def test_reward_model_from_pretrained(tiny_models, assert_conforms):
    oracle = RewardModelOracle.from_pretrained(tiny_models["reward"], device="cpu", batch_size=3, temperature=0.5)
    p = assert_conforms(oracle, PROMPTS, FIRST, SECOND, atol=1e-5)
    # P = sigmoid((r(x, a) - r(x, b)) / T) with r the model's logit on "{prompt}\n\n{response}"
    model, tok = _load("AutoModelForSequenceClassification", tiny_models["reward"])
    with torch.no_grad():
        r = [
            model(**tok(f"{x}\n\n{y}", return_tensors="pt")).logits[0, 0].item()
            for x, y in zip(PROMPTS, FIRST + SECOND)
        ]
        r += [model(**tok(f"{x}\n\n{y}", return_tensors="pt")).logits[0, 0].item() for x, y in zip(PROMPTS, SECOND)]
    expected = torch.sigmoid((torch.tensor(r[:4]) - torch.tensor(r[-4:])) / 0.5)
    torch.testing.assert_close(p, expected, atol=1e-5, rtol=0)
    # Bradley-Terry is consistent by construction
    q = oracle(PROMPTS, SECOND, FIRST)
    torch.testing.assert_close(p + q, torch.ones(4), atol=1e-6, rtol=0)
    assert p[2].item() == 0.5  # identical responses


def test_reward_oracle_from_function_scores_each_response_once():
    seen = []

    def reward(prompts, responses):
        seen.append(len(responses))
        return [float(len(y)) for y in responses]

    oracle = RewardModelOracle(reward, temperature=2.0)
    p = oracle(["q", "q", "q"], ["abc", "a", "abc"], ["a", "abc", "abcde"])
    assert seen == [3]  # three distinct (prompt, response) pairs
    assert p.tolist() == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1)), 1 / (1 + math.exp(1))])
    sym = symmetrize(oracle)
    torch.testing.assert_close(sym(["q"], ["abc"], ["a"]), oracle(["q"], ["abc"], ["a"]).double())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RewardModelOracle(reward, temperature=0)


# ----------------------------------------------------------------------------- pairwise classifier
def test_pairwise_classifier_two_labels(tiny_models, assert_conforms):
    oracle = PairwiseClassifierOracle.from_pretrained(tiny_models["pair"], device="cpu", batch_size=2)
    p = assert_conforms(oracle, PROMPTS, FIRST, SECOND, atol=1e-5)
    model, tok = _load("AutoModelForSequenceClassification", tiny_models["pair"])
    with torch.no_grad():
        expected = [
            torch.softmax(
                model(**tok(DEFAULT_PAIR_TEMPLATE.format(prompt=x, first=a, second=b), return_tensors="pt")).logits[0],
                -1,
            )[0].item()
            for x, a, b in zip(PROMPTS, FIRST, SECOND)
        ]
    torch.testing.assert_close(p, torch.tensor(expected), atol=1e-5, rtol=0)
    # reads both responses, so it has a position bias; symmetrize removes it exactly
    assert not check_oracle(oracle, PROMPTS, FIRST + SECOND, num_pairs=16).consistent()
    assert check_oracle(symmetrize(oracle), PROMPTS, FIRST + SECOND, num_pairs=16).consistent(tol=0.0)


def test_pairwise_classifier_one_label_is_sigmoid(tiny_models):
    oracle = PairwiseClassifierOracle.from_pretrained(
        tiny_models["reward"], device="cpu", template="{prompt}|{first}|{second}"
    )
    model, tok = _load("AutoModelForSequenceClassification", tiny_models["reward"])
    with torch.no_grad():
        logit = model(**tok("say hello|hi|bye", return_tensors="pt")).logits[0, 0]
    assert oracle(["say hello"], ["hi"], ["bye"]).item() == pytest.approx(torch.sigmoid(logit).item(), abs=1e-6)
    with pytest.raises(ValueError, match="must contain \\{second\\}"):
        PairwiseClassifierOracle.from_pretrained(tiny_models["reward"], device="cpu", template="{prompt}{first}")


# ----------------------------------------------------------------------------- LLM judge
def test_llm_judge_reads_next_token_probabilities(tiny_models, assert_conforms):
    oracle = LLMJudgeOracle.from_pretrained(tiny_models["judge"], device="cpu", batch_size=3)
    p = assert_conforms(oracle, PROMPTS, FIRST, SECOND, atol=1e-5)
    model, tok = _load("AutoModelForCausalLM", tiny_models["judge"])
    ids_a = [tok.encode(s, add_special_tokens=False) for s in ("A", " A")]
    ids_b = [tok.encode(s, add_special_tokens=False) for s in ("B", " B")]
    ids_a = [t[0] for t in ids_a if len(t) == 1]
    ids_b = [t[0] for t in ids_b if len(t) == 1]
    assert oracle.choice_ids == [ids_a, ids_b]
    with torch.no_grad():
        expected = []
        for x, a, b in zip(PROMPTS, FIRST, SECOND):
            z = model(**tok(oracle.format(x, a, b), return_tensors="pt")).logits[0, -1]
            za, zb = torch.logsumexp(z[ids_a], 0), torch.logsumexp(z[ids_b], 0)
            expected.append(torch.softmax(torch.stack([za, zb]), 0)[0].item())
    torch.testing.assert_close(p, torch.tensor(expected), atol=1e-5, rtol=0)
    report = check_oracle(symmetrize(oracle), PROMPTS, FIRST + SECOND, num_pairs=16)
    assert report.consistent(tol=0.0) and report.position_bias == 0.0


def test_llm_judge_chat_template_and_bad_choices(tiny_models):
    model, tok = _load("AutoModelForCausalLM", tiny_models["judge"])
    tok.chat_template = (
        "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}</s>[assistant]{% endif %}"
    )
    judge = LLMJudgeOracle(model, tok, device="cpu")
    assert judge.use_chat_template
    text = judge.format("q", "a", "b")
    assert text.startswith("<s>[user] Which response") and text.endswith("[assistant]")
    p = judge(["q", "q"], ["a", "b"], ["b", "a"])
    assert p.shape == (2,) and bool(((p > 0) & (p < 1)).all())
    with pytest.raises(ValueError, match="not a single token"):
        LLMJudgeOracle(model, tok, choices=("First response", "B"), device="cpu")
    with pytest.raises(ValueError, match="max_length=5"):
        LLMJudgeOracle(model, tok, device="cpu", max_length=5)(["q"], ["a"], ["b"])


# ----------------------------------------------------------------------------- GPM
def test_gpm_is_skew_symmetric_and_can_be_cyclic():
    angles = {"rock": 0.0, "paper": 2 * math.pi / 3, "scissors": 4 * math.pi / 3}

    def embed(prompts, responses):
        return torch.tensor([[math.cos(angles[r]), math.sin(angles[r])] for r in responses], dtype=torch.float64)

    gpm = GPMOracle(embed, beta=0.5)
    first, second = ["rock", "paper", "scissors", "paper"], ["paper", "scissors", "rock", "paper"]
    p = gpm(["x"] * 4, first, second)
    # s(a > b) = sin(theta_b - theta_a) = sin(2 pi / 3) on the cycle rock < paper < scissors < rock
    win = 1 / (1 + math.exp(-math.sin(2 * math.pi / 3) / 0.5))
    assert p.tolist() == pytest.approx([win, win, win, 0.5], abs=1e-12)
    assert p[3].item() == 0.5
    torch.testing.assert_close(p + gpm(["x"] * 4, second, first), torch.ones(4, dtype=torch.float64))
    # eigenvalues scale each 2-D block
    assert GPMOracle(embed, eigenvalues=[0.0], beta=0.5)(["x"], ["rock"], ["paper"]).item() == 0.5
    with pytest.raises(ValueError, match="eigenvalues must be"):
        GPMOracle(embed, eigenvalues=[-1.0])


def test_gpm_from_pretrained_tiny_encoder_and_head_roundtrip(tiny_models, tmp_path, assert_conforms):
    gpm = GPMOracle.from_pretrained(tiny_models["judge"], dim=6, seed=1, eigenvalues=[1.0, 0.5, 0.25], device="cpu")
    p = assert_conforms(gpm, PROMPTS, FIRST, SECOND, atol=1e-6)
    assert p[2].item() == 0.5
    assert check_oracle(gpm, PROMPTS, FIRST + SECOND, num_pairs=32).max_asymmetry < 1e-12
    v = gpm.embed(PROMPTS, FIRST)
    assert v.shape == (4, 6)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(4, dtype=torch.float64))
    gpm.save_head(tmp_path / "head.pt")
    again = GPMOracle.from_pretrained(tiny_models["judge"], head_path=str(tmp_path / "head.pt"), device="cpu")
    torch.testing.assert_close(again(PROMPTS, FIRST, SECOND), p, atol=1e-12, rtol=0)
    torch.testing.assert_close(again.eigenvalues, torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))


def test_gpm_default_encoder_is_real_minilm(minilm_path, assert_conforms):
    gpm = GPMOracle.from_pretrained(device="cpu", beta=0.1)  # raw 384-d embeddings, 192 blocks
    prompts = ["What is the capital of France?"] * 3 + ["Name a fruit."]
    first = ["Paris is the capital of France.", "Lyon.", "I do not know.", "An apple."]
    second = ["Lyon.", "I do not know.", "Paris is the capital of France.", "A car."]
    p = assert_conforms(gpm, prompts, first, second, atol=1e-6)
    assert bool(((p > 0) & (p < 1)).all())
    # mean pooling matches sentence-transformers' own encoding of the same text
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(minilm_path, device="cpu").encode(
        [f"{x}\n{y}" for x, y in zip(prompts, first)], convert_to_tensor=True, normalize_embeddings=True
    )
    ours = gpm.embed(prompts, first).float()
    assert torch.nn.functional.cosine_similarity(ours, ref.cpu(), dim=-1).min().item() > 0.9999
