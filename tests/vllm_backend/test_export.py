"""What the engine receives: :func:`export_weights` (full model, merged LoRA) and the server's safetensors blob."""

from __future__ import annotations

import copy

import pytest
import torch

from nashalign.llm.vllm_backend import deserialize_weights, export_weights, serialize_weights

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}


def test_full_model_export_is_every_named_parameter(load_policy):
    policy = load_policy()
    named = export_weights(policy.model)
    expected = dict(policy.model.named_parameters(remove_duplicate=False))
    assert [n for n, _ in named] == list(expected)
    assert "lm_head.weight" in dict(named)  # tied to the embedding, pushed under both names
    for n, t in named:
        assert torch.equal(t, expected[n].detach())


def test_lora_export_equals_peft_merge_and_unload(load_policy):
    policy = load_policy(lora=LORA)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.5)  # B starts at zero: make the delta non-zero
    merged = copy.deepcopy(policy.model).merge_and_unload()
    want = dict(merged.named_parameters(remove_duplicate=False))
    got = dict(export_weights(policy.model))
    assert set(got) == set(want)
    for n, t in got.items():
        torch.testing.assert_close(t, want[n].detach(), rtol=0, atol=1e-6)
    with policy.model.disable_adapter():  # adapter off: the base weights, i.e. mu
        base = dict(export_weights(policy.model))
    changed = sorted(n for n in got if not torch.equal(got[n], base[n]))
    assert len(changed) == 6 and all(n.split(".")[-2] in LORA["target_modules"] for n in changed), changed

def test_dora_is_refused_with_a_clear_error(load_policy):
    policy = load_policy(lora={**LORA, "use_dora": True})
    with pytest.raises(ValueError, match="DoRA"):
        export_weights(policy.model)


def test_safetensors_blob_round_trips_tied_weights(load_policy):
    named = export_weights(load_policy().model)
    back = dict(deserialize_weights(serialize_weights(named)))
    assert set(back) == {n for n, _ in named}
    for n, t in named:
        assert torch.equal(back[n], t)
