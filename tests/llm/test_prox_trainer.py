"""NashTrainer with the prox-point rules (mpo, comal, nash_prox) and ONPO (issue 16).

* the prox centre becomes a snapshot of the policy when ``alg.recentres_at(t)``, and the loss's ``logp_ref``
  is then the centre's log-probabilities (mixed with ``mu`` by ``centre_ref_weight`` for Nash-Prox);
* ONPO's played policy (opponent kind ``"half"``) survives from one iteration to the next;
* both resume from a checkpoint exactly like an uninterrupted run.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import TIMING_KEYS, latest_checkpoint, make_algorithm, make_trainer, trainable


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0)


@pytest.mark.parametrize("name,hp", [("mpo", {"every": 1}), ("nash_prox", {"every": 1, "beta": 0.05})])
def test_centre_is_reset_to_the_policy_and_read_as_the_reference(name, hp, load_policy, synthetic_task, tmp_path):
    alg = make_algorithm(name, **hp)
    trainer = make_trainer(load_policy(), alg, synthetic_task, tmp_path, iterations=3)
    trainer.step()
    assert trainer._centre is None  # iteration 0 is regularised toward mu itself
    snap = trainer.policy.snapshot()  # pi_1
    samples = trainer._generate(list(synthetic_task.prompts[:2]), 2)
    ref = trainer._logprobs(samples, model="reference")
    trainer.step()
    _close(trainer._centre, snap)  # the centre of iteration 1 is pi_1
    with trainer.policy.using(snap):
        centre = trainer._logprobs(samples, model=trainer._train_module())
    w = alg.centre_ref_weight()
    torch.testing.assert_close(trainer._reference_logprobs(samples), (1 - w) * centre + w * ref)
    assert (centre - ref).abs().max() > 1e-4  # the centre is not mu: the reset matters


def test_onpo_keeps_the_played_policy_for_the_next_iteration(load_policy, synthetic_task, tmp_path):
    alg = make_algorithm("onpo")
    trainer = make_trainer(load_policy(), alg, synthetic_task, tmp_path, iterations=2)
    trainer.step()
    assert trainer._half is not None and "half" in trainer._kinds_seen
    played = {k: v.clone() for k, v in trainer._half.items()}
    assert any((played[k] - v).abs().max() > 0 for k, v in trainer.policy.snapshot().items())  # pi_1 != pi_hat_1
    trainer.step()
    assert any((played[k] - v).abs().max() > 0 for k, v in trainer._half.items())  # replaced by pi_2


@pytest.mark.parametrize("name,hp", [("mpo", {"every": 1}), ("onpo", {})])
def test_resume_after_interruption_equals_uninterrupted_run(name, hp, load_policy, synthetic_task, tmp_path):
    alg = make_algorithm(name, **hp)
    full = make_trainer(load_policy(), alg, synthetic_task, tmp_path / "full", iterations=4)
    full.train()
    first = make_trainer(load_policy(), alg, synthetic_task, tmp_path / "cut", iterations=4, save_every=2)
    first.train(stop_after=2)
    assert latest_checkpoint(tmp_path / "cut").name == "iter-000002"
    resumed = make_trainer(load_policy(), alg, synthetic_task, tmp_path / "cut", iterations=4, resume=True)
    resumed.train()
    a, b = trainable(full.policy), trainable(resumed.policy)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=1e-6, msg=f"parameter {n} differs after resume")

    def stable(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]

    assert stable(tmp_path / "full" / "metrics.jsonl") == stable(tmp_path / "cut" / "metrics.jsonl")
