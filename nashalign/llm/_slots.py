"""The opponent-bank half of :class:`~nashalign.llm.trainer.NashTrainer`: what the trainer keeps in its
:class:`~nashalign.llm.opponents.OpponentBank` beyond the samplers' opponents, and how it reads them.

* ``previous`` = ``theta_{t-1}``: scored for ``LossInputs.logp_previous`` when ``alg.uses_previous`` (APO, MNPO);
* ``centre`` = the prox centre ``pi_k`` (MPO, COMAL, Nash-Prox; stored when ``alg.recentres_at(t)``):
  ``logp_ref = (1 - w) log pi_k + w log mu`` with ``w = alg.centre_ref_weight()``;
* ``theta_t`` for the later phases of a multi-phase algorithm (EGPO, ONPO), with its optimizer state; ONPO's
  ``half`` slot (its last played policy) lends its buffers to ``theta_t`` and gets the new played policy back.

Every slot is read under an in-place swap (no grad), so no second model copy is made on the device.
"""

from __future__ import annotations

from typing import Any

import torch

from nashalign.estimators import Feedback

__all__ = ["TrainerSlots"]


class TrainerSlots:
    """Mixed into ``NashTrainer``; uses its ``bank``, ``alg``, ``config``, ``optimizer`` and ``_logprobs``."""

    def _slot_logprobs(self, slot: str, responses: Any) -> torch.Tensor:
        """``(N,)`` log-probs of ``responses`` under the bank's ``slot`` (swapped in, no grad)."""
        with self.bank.swapped(slot):
            return self._logprobs(responses, model=self._train_module())

    def _reference_logprobs(self, responses: Any) -> torch.Tensor:
        """``logp_ref``: ``log mu``, or once a prox-point rule's centre ``pi_k`` is stored (``alg.recentres_at``)
        ``(1 - w) log pi_k + w log mu`` with ``w = alg.centre_ref_weight()`` (``mu`` is not run when ``w = 0``)."""
        if "centre" not in self.bank:
            return self._logprobs(responses, model="reference")
        centre = self._slot_logprobs("centre", responses)
        w = float(self.alg.centre_ref_weight())
        return centre if w == 0 else (1.0 - w) * centre + w * self._logprobs(responses, model="reference")

    # Parameter copies the bank holds across iterations, as {name: tensor} (None when absent).
    @property
    def _previous(self) -> dict[str, torch.Tensor] | None:
        """``theta_{t-1}`` (OMWU's opponent; APO's / MNPO's ``logp_previous``)."""
        return self.bank.slots.get("previous")

    @property
    def _half(self) -> dict[str, torch.Tensor] | None:
        """ONPO's last played policy (opponent kind ``half`` of phase 0)."""
        return self.bank.slots.get("half")

    @property
    def _centre(self) -> dict[str, torch.Tensor] | None:
        """The prox centre ``pi_k`` (MPO, COMAL, Nash-Prox); None while it is ``mu``."""
        return self.bank.slots.get("centre")

    def _previous_logprobs(self, fb: Feedback) -> torch.Tensor | None:
        """``(N,)`` ``log pi_{t-1}`` of the responses when ``alg.uses_previous`` (``pi_{-1} = pi_0``), else None."""
        if not self.alg.uses_previous:
            return None
        if "previous" not in self.bank:
            self.bank.store("previous")
        return self._slot_logprobs("previous", fb.responses)

    def _store_theta_t(self, reuse_half: bool) -> None:
        """Keep ``theta_t`` (and its optimizer state) for the later phases, after phase 0's feedback is collected.

        ONPO (``reuse_half``): the last played policy was phase 0's opponent only, so its slot takes ``theta_t``
        (one slot, not two).
        """
        if reuse_half:
            self.bank.rename("half", "theta_t")
        self.bank.store("theta_t")
        if self.config.extragradient_restore_optimizer:
            self.bank.store_optimizer(self.optimizer)

    def _restore_theta_t(self, keep_half: bool) -> None:
        """``theta <- theta_t`` (and its optimizer state).  ONPO (``keep_half``): swapped, so the slot keeps the
        live half step, the played policy ``pi_t`` that phase 0 of the next iteration plays against."""
        if keep_half:
            self.bank.exchange("theta_t")
            self.bank.rename("theta_t", "half")
        else:
            self.bank.load("theta_t")
        if self.config.extragradient_restore_optimizer:
            self.bank.restore_optimizer(self.optimizer)
