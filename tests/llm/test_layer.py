"""The LLM layer's GPU-facing defects, checked on the CPU: the opponent bank (in-place swaps, one slot, optimizer
restored in place), precision (fp32 master weights, the reference in the compute dtype), sharding refusal,
host-device syncs outside inner loops, and the knobs (gradient checkpointing, attn_implementation, device_map)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tiny_settings import TINY as _BASE  # noqa: E402

from nashalign.algorithms import get_algorithm
from nashalign.llm import _decode, _setup
from nashalign.llm.opponents import OpponentBank
from nashalign.llm.trainer import NashTrainer, TrainerConfig

TINY = {**_BASE, "num_threads": 1}


def make(policy, task, tmp_path, alg, **kw):
    cfg = TrainerConfig(**{**TINY, "output_dir": str(tmp_path), **kw})
    return NashTrainer(policy, alg, task.oracle(), task.prompts, cfg)


# ------------------------------------------------------------------ opponent bank
def test_bank_swaps_in_place_and_restores_the_optimizer_without_new_tensors(load_policy):
    policy = load_policy()
    params = [p for p in policy.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    bank = OpponentBank(policy.model, offload=True)
    bank.store("previous")
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    ids = [id(p) for p in params]
    with bank.swapped("previous"):
        assert all(torch.equal(p, b) for p, b in zip(params, before))  # the slot's values are live
    assert [id(p) for p in params] == ids and all(torch.equal(p, b + 1) for p, b in zip(params, before))
    assert bank.copies() == {"device": 0.0, "host": 1.0}  # exactly one parameter-sized copy, on the host

    opt = torch.optim.AdamW(params, lr=1e-3)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    state = opt.state[params[0]]
    saved = {k: v.clone() for k, v in state.items()}
    ptrs = {k: v.data_ptr() for k, v in state.items()}
    bank.store_optimizer(opt)
    opt.step()
    bank.restore_optimizer(opt)
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, saved[k]) and v.data_ptr() == ptrs[k]  # restored in place, no second live copy


#: extra hyperparameters: the prox rules re-centre every iteration (so the centre slot is used), APO is unregularised
SLOT_HP = {"mpo": {"every": 1}, "comal": {"every": 1}, "nash_prox": {"every": 1}, "apo": {"tau": 0.0}}


@pytest.mark.parametrize(("name", "slots"), [("egpo", 1), ("omwu", 1), ("nash_ema", 1), ("nash_md", 0), ("omd", 0),
                                             ("onpo", 1), ("mpo", 1), ("comal", 2), ("nash_prox", 1), ("apo", 1),
                                             ("mnpo", 1), ("rspo", 0), ("xpo", 0)])
def test_no_algorithm_holds_more_than_one_opponent_copy(name, slots, load_policy, synthetic_task, tmp_path,
                                                        monkeypatch):
    """Slots: OMWU/APO/MNPO theta_{t-1}, Nash-EMA the average, EGPO theta_t, ONPO its played policy (whose buffers
    hold theta_t during the iteration), MPO/Nash-Prox the prox centre; COMAL (EGPO inner solver) the centre and
    theta_t, the only two-slot case.  Every slot stays off the device."""
    trainer = make(load_policy(), synthetic_task, tmp_path, get_algorithm(name, **{"eta": 0.5, "tau": 0.1,
                                                                                    **SLOT_HP.get(name, {})}))
    peak = {"slots": 0}
    store = OpponentBank.store

    def counting(self, slot):
        out = store(self, slot)
        peak["slots"] = max(peak["slots"], len(self.slots))
        return out

    monkeypatch.setattr(OpponentBank, "store", counting)
    trainer.train()
    assert peak["slots"] == slots
    assert trainer.bank.copies()["device"] == 0.0  # offloaded (opponent_offload defaults to True)


# ------------------------------------------------------------------ precision and the reference
def test_bf16_weights_get_fp32_master_weights_and_a_bf16_reference(load_policy, synthetic_task, tmp_path):
    policy = load_policy(dtype="bfloat16")
    trainer = make(policy, synthetic_task, tmp_path, get_algorithm("nash_md", eta=0.5, tau=0.1),
                   mixed_precision="bf16", iterations=1)
    assert all(p.dtype == torch.float32 for p in policy.model.parameters() if p.requires_grad)
    assert all(p.dtype == torch.bfloat16 for p in policy._ref_model.parameters())
    history = trainer.train()
    assert math.isfinite(history[-1]["loss"])


def test_fp32_policy_under_bf16_autocast_scores_mu_in_bf16(load_policy, synthetic_task, tmp_path):
    policy = load_policy()
    make(policy, synthetic_task, tmp_path, get_algorithm("nash_md", eta=0.5, tau=0.1), mixed_precision="bf16")
    assert next(policy._ref_model.parameters()).dtype == torch.bfloat16  # the frozen copy in the compute dtype
    assert next(policy.model.parameters()).dtype == torch.float32


def test_half_precision_weights_without_mixed_precision_are_refused(load_policy, synthetic_task, tmp_path):
    with pytest.raises(ValueError, match="trainer.mixed_precision=bf16.*master"):
        make(load_policy(dtype="bfloat16"), synthetic_task, tmp_path, get_algorithm("omd", eta=0.5, tau=0.1))


def test_sharded_full_fine_tuning_requires_lora(load_policy):
    from accelerate.utils import DistributedType

    fake = SimpleNamespace(distributed_type=DistributedType.FSDP, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="unsharded on every rank.*LoRA"):
        _setup.prepare_reference(load_policy(), fake, TrainerConfig(cpu=True))
    _setup.prepare_reference(load_policy(lora={"r": 4}), fake, TrainerConfig(cpu=True))  # LoRA: the base is mu


# ------------------------------------------------------------------ host-device syncs
class SyncCounter:
    """Counts the conversions of computed values (floating or bool tensors) to Python made by nashalign's code:
    on an accelerator each is a host-device sync.  Host-side index bookkeeping (long tensors built on the CPU,
    e.g. row numbers for the response texts) and torch's own internals are not counted."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        import sys

        self.n, self._sys = 0, sys
        for name in self.NAMES:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name)))

    def _wrap(self, orig):
        def counted(t, *a, **k):
            caller = self._sys._getframe(1).f_code.co_filename
            if "nashalign" in caller and "tests" not in caller and (t.is_floating_point() or t.dtype == torch.bool):
                self.n += 1
            return orig(t, *a, **k)

        return counted


def test_inner_loops_do_not_sync(load_policy, synthetic_task, tmp_path, monkeypatch):
    """The optimisation loop reads its metrics once per phase: the sync count does not grow with the number of
    minibatches; decoding checks for the end every 8 tokens, not every token."""
    policy = load_policy()
    alg = get_algorithm("nash_md", eta=0.5, tau=0.1)
    trainer = make(policy, synthetic_task, tmp_path, alg, epochs=3, k=4, prompts_per_iteration=3)
    fb = trainer._collect(0, 0, trainer._prompt_batch(0, 0))
    counts = {}
    for mb in (64, 1):  # 1 optimizer step per epoch vs one per row (18 rows)
        trainer.config.minibatch_size = mb
        counter = SyncCounter(monkeypatch)
        trainer.optimise(fb, t=0)
        counts[mb] = counter.n
        monkeypatch.undo()
    assert counts[1] == counts[64], counts

    rnd = policy
    decoded = {}
    for tokens in (8, 32):
        counter = SyncCounter(monkeypatch)
        with torch.no_grad():
            ids, mask = rnd.encode_prompts(synthetic_task.prompts)
            _decode.decode(rnd.model, _null, rnd.reference, ids, mask, eos_ids=[-1], pad_id=rnd.pad_token_id,
                           max_new_tokens=tokens, generator=torch.Generator().manual_seed(0))
        decoded[tokens] = counter.n
        monkeypatch.undo()
    assert decoded[32] - decoded[8] <= 3, decoded  # one check per 8 tokens, none per token


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------ knobs
def test_gradient_checkpointing_gives_the_same_step(load_policy, synthetic_task, tmp_path):
    alg = get_algorithm("omd", eta=0.5, tau=0.1)
    out = {}
    for flag in (False, True):
        policy = load_policy()
        make(policy, synthetic_task, tmp_path / str(flag), alg, gradient_checkpointing=flag, iterations=1).train()
        out[flag] = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    for n in out[False]:
        torch.testing.assert_close(out[True][n], out[False][n], rtol=1e-5, atol=1e-6)


def test_attn_implementation_and_device_map_pass_through(tiny_lm_dir):
    from nashalign.llm.policy import CausalLMPolicy

    eager = CausalLMPolicy.from_pretrained(tiny_lm_dir, device="cpu", attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager"
    placed = CausalLMPolicy.from_pretrained(tiny_lm_dir, device_map={"": "cpu"}, torch_dtype="bfloat16")
    assert placed.device.type == "cpu" and next(placed.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype or torch_dtype"):
        CausalLMPolicy.from_pretrained(tiny_lm_dir, dtype="float32", torch_dtype="bfloat16")


# ------------------------------------------------------------------ devices from the process state
def test_the_app_places_policy_and_oracle_on_the_process_device(tiny_lm_dir, monkeypatch):
    """llm/train.py creates the distributed state first and passes its device: a ``device: null`` entry of the
    model group and of a model-based oracle is filled with it (not left to resolve to cuda:0 on every rank)."""
    from hydra import compose, initialize_config_dir

    import nashalign.llm.app as app
    from nashalign.llm._load import process_state

    conf = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "conf" / "llm")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="llm", overrides=[
            "model=hf", f"model.name_or_path={tiny_lm_dir}", "oracle=reward_model",
            "oracle.oracle.name_or_path=unused", "data=jsonl", "data.source=unused.jsonl"])
    device = process_state(cpu=True).device
    seen = {}
    monkeypatch.setattr(app, "instantiate", lambda node, **kw: seen.setdefault("oracle", node))
    app.select_oracle(cfg, None, device=device)
    assert seen["oracle"].oracle.device == str(device)
    monkeypatch.undo()
    policy = app.build_policy(cfg.model, None, ["x"], device=device)
    assert policy.device == device


def test_importing_the_trainer_does_not_import_hydra():
    import subprocess
    import sys

    code = ("import sys, nashalign.llm.trainer, nashalign.llm.checkpoint, nashalign.llm.opponents; "
            "bad = [m for m in ('hydra', 'omegaconf') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
