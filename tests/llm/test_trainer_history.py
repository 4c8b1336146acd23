"""Algorithms whose loss reads log pi_{t-1} (APO, MNPO): the trainer keeps theta_{t-1}, and a resumed run
equals an uninterrupted one (theta_{t-1} is checkpointed with the run)."""

from __future__ import annotations

import pytest
import torch
from test_trainer import make_algorithm, make_trainer, trainable

from nashalign.llm.trainer import latest_checkpoint


@pytest.mark.parametrize("name", ["apo", "mnpo"])
def test_previous_iterate_is_kept_and_resumes_exactly(name, load_policy, synthetic_task, tmp_path):
    alg = make_algorithm(name)
    full = make_trainer(load_policy(), alg, synthetic_task, tmp_path / "full", iterations=3)
    full.train()
    assert full._previous is not None  # theta_{t-1}, scored for LossInputs.logp_previous

    first = make_trainer(load_policy(), alg, synthetic_task, tmp_path / "cut", iterations=3, save_every=2)
    first.train(stop_after=2)
    assert latest_checkpoint(tmp_path / "cut").name == "iter-000002"
    resumed = make_trainer(load_policy(), alg, synthetic_task, tmp_path / "cut", iterations=3, resume=True)
    assert resumed._previous is not None
    resumed.train()
    a, b = trainable(full.policy), trainable(resumed.policy)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=1e-6, msg=f"parameter {n} differs after resume")
