"""GPU checks of every LLM path (``-m gpu``; skipped without CUDA): sampling including the KV-cached mixture in
bf16, one trainer iteration of every algorithm in bf16 autocast with full fine-tuning and with LoRA, the
opponent bank (pinned host slots, in-place swaps), gradient checkpointing, no extra host-device syncs, and the
tabular torch solver on CUDA.  ``benchmarks/gpu_check.sh`` runs them on the lent GPU machine."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from nashalign.algorithms import ALGORITHMS, get_algorithm
from nashalign.llm.trainer import NashTrainer, TrainerConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

TINY = dict(iterations=1, prompts_per_iteration=4, max_new_tokens=6, epochs=1, minibatch_size=8,
            learning_rate=1e-3, cpu=False, progress=False, save_final_model=False, mixed_precision="bf16")


def hp(name: str) -> dict:
    return {"eta": 0.5, "tau": 0.0 if ALGORITHMS[name].tau_rule == "zero" else 0.1}


@pytest.fixture
def cuda_policy(tiny_lm_dir):
    from nashalign.llm.policy import CausalLMPolicy

    def load(**kw):
        return CausalLMPolicy.from_pretrained(tiny_lm_dir, device="cuda", **kw)

    return load


def test_sampling_and_the_mixture_in_bf16(cuda_policy, synthetic_task):
    policy = cuda_policy(dtype="bfloat16")
    for mixture in (0.0, 0.5):
        s = policy.generate(synthetic_task.prompts, 4, max_new_tokens=6, mixture=mixture, seed=0)
        assert s.response_ids.is_cuda and len(s) == 12
        lp = policy.sequence_logprobs(s)
        assert lp.dtype == torch.float32 and torch.isfinite(lp).all()


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_trains_in_bf16(name, mode, cuda_policy, synthetic_task, tmp_path):
    policy = cuda_policy(lora={"r": 4} if mode == "lora" else None)
    cfg = TrainerConfig(**TINY, lora={"r": 4} if mode == "lora" else None, output_dir=str(tmp_path))
    trainer = NashTrainer(policy, get_algorithm(name, **hp(name)), synthetic_task.oracle(), synthetic_task.prompts,
                          cfg)
    history = trainer.train()
    assert math.isfinite(history[-1]["loss"]) and history[-1]["peak_memory_mb"] > 0
    assert trainer.bank.copies()["device"] == 0.0
    if mode == "full":
        assert next(policy._ref_model.parameters()).dtype == torch.bfloat16


def test_opponent_bank_on_pinned_host_memory(cuda_policy):
    from nashalign.llm.opponents import OpponentBank

    policy = cuda_policy()
    bank = OpponentBank(policy.model, offload=True)
    slot = bank.store("previous")
    assert all(t.device.type == "cpu" and t.is_pinned() for t in slot.values())
    params = [p for p in policy.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.mul_(2.0)
    with bank.swapped("previous"):
        torch.cuda.synchronize()
        assert all(torch.equal(p, b) for p, b in zip(params, before))
    torch.cuda.synchronize()
    assert all(torch.equal(p, 2 * b) for p, b in zip(params, before))


def test_gradient_checkpointing_on_cuda(cuda_policy, synthetic_task, tmp_path):
    policy = cuda_policy()
    cfg = TrainerConfig(**TINY, gradient_checkpointing=True, output_dir=str(tmp_path))
    history = NashTrainer(policy, get_algorithm("egpo", eta=0.5, tau=0.1), synthetic_task.oracle(),
                          synthetic_task.prompts, cfg).train()
    assert math.isfinite(history[-1]["loss"])


def test_the_optimisation_loop_syncs_once_per_phase(cuda_policy, synthetic_task, tmp_path):
    policy = cuda_policy()
    cfg = TrainerConfig(**{**TINY, "epochs": 3, "k": 4}, output_dir=str(tmp_path))
    trainer = NashTrainer(policy, get_algorithm("nash_md", eta=0.5, tau=0.1), synthetic_task.oracle(),
                          synthetic_task.prompts, cfg)
    fb = trainer._collect(0, 0, trainer._prompt_batch(0, 0))

    def syncs(fn) -> int:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught)

    # what the model's own forward + backward costs (transformers may sync inside, e.g. for attention masks)
    one = fb.responses.select(torch.arange(2))
    per_step = syncs(lambda: policy.sequence_logprobs(one, grad=True).sum().backward())
    counts = {}
    for mb in (64, 1):
        trainer.config.minibatch_size = mb
        counts[mb] = syncs(lambda: trainer.optimise(fb, t=0))
    extra_steps = 3 * (fb.index.shape[0] - 1)  # 3 epochs: R steps each instead of 1
    assert counts[1] - counts[64] <= extra_steps * per_step, (counts, per_step)


def test_tabular_torch_solver_on_cuda():
    import nashalign as na

    game = na.games.rock_paper_scissors()
    cpu = na.solve(game, "omd", eta=0.5, tau=0.1, steps=50, backend="torch", device="cpu")
    gpu = na.solve(game, "omd", eta=0.5, tau=0.1, steps=50, backend="torch", device="cuda")
    on_gpu = torch.as_tensor(gpu.last)
    assert on_gpu.is_cuda
    np.testing.assert_allclose(on_gpu.cpu().numpy(), torch.as_tensor(cpu.last).numpy(), atol=1e-10)
