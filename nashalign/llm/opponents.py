"""The opponent bank: parameter copies an algorithm plays against, kept off the accelerator by default.

Opponent kinds (:data:`nashalign.algorithms.base.OPPONENT_KINDS`) that are not the live policy or the
mixture with ``mu`` need other parameters: ``previous`` = ``theta_{t-1}`` (OMWU), ``half`` = the
extragradient half step (EGPO) or the last played policy (ONPO), ``ema`` = ``theta_bar_t`` (Nash-EMA).  Two
more slots feed the loss rather than the sampler: ``previous`` scores responses for ``LossInputs.logp_previous``
(APO, MNPO: ``uses_previous``) and ``centre`` = the prox centre ``pi_k`` (MPO, COMAL, Nash-Prox).  The bank holds them as named
*slots*: one tensor per trainable parameter (the LoRA adapter only under LoRA), on the CPU (pinned when
a GPU is used) or on the device, allocated once and reused.  Sampling from a slot SWAPS it with the live
parameters in place, one parameter at a time (a temporary of one parameter's size, never a third copy of
the model), so optimizers built on the parameters stay valid.

Per iteration the trainer holds at most ONE slot, COMAL two (see :meth:`NashTrainer` in :mod:`nashalign.llm.trainer`):

* OMWU: ``previous``; after the phase's feedback is collected it is overwritten with ``theta_t``;
* EGPO: ``theta_t`` (phase 1 samples the half step from the live model, swaps ``theta_t`` in for the
  ``pi_t`` responses, then loads it back before optimising) plus the optimizer state of ``theta_t``
  (:meth:`OpponentBank.store_optimizer`, restored in place: no second device copy);
* Nash-EMA: ``ema``, updated in place ``ema <- (1 - beta) ema + beta theta``;
* APO, MNPO: ``previous`` (scored under a swap before it is overwritten with ``theta_t``);
* MPO, COMAL, Nash-Prox: ``centre``, overwritten with ``theta_t`` when ``alg.recentres_at(t)`` (scored under a
  swap); COMAL's EGPO inner solver adds EGPO's ``theta_t`` and optimizer state;
* ONPO: ``half`` = the played ``pi_{t-1}``, phase 0's opponent; once phase 0's feedback is collected its
  buffers take ``theta_t`` (:meth:`OpponentBank.rename`), and before phase 1 optimises the slot and the live
  half step trade places (:meth:`OpponentBank.exchange`): the slot holds the new played ``pi_t``, the model
  ``theta_t`` again; plus the optimizer state, as EGPO.

Copies held (``P`` = trainable parameters): 1 slot (``P``) for OMWU / Nash-EMA / APO / MNPO / MPO / Nash-Prox
(and COMAL with ``inner='inpo'``), 1 slot plus the optimizer state (``P`` + 2``P`` for Adam) for EGPO / ONPO,
2 slots plus the optimizer state for COMAL (EGPO inner solver), 0 for the rest; all on the host with
``offload=True``: the device holds the policy, the reference and the optimizer state only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["OpponentBank", "trainable_named", "swap_into", "copy_into"]


def trainable_named(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad`` (the adapter under LoRA)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _check_names(named: Mapping[str, Any], slot: Mapping[str, Tensor]) -> None:
    missing = [n for n in named if n not in slot]
    unknown = [n for n in slot if n not in named]
    if missing or unknown:
        raise KeyError(
            f"Snapshot does not match the trainable parameters: missing {missing[:3]}, unknown {unknown[:3]}"
            f" (of {len(named)} trainable). Was it taken from this policy with the same LoRA setup?"
        )


@torch.no_grad()
def copy_into(model: nn.Module, slot: Mapping[str, Tensor]) -> None:
    """``theta <- slot`` in place for every trainable parameter (identities kept)."""
    named = dict(trainable_named(model))
    _check_names(named, slot)
    for n, p in named.items():
        p.copy_(slot[n], non_blocking=True)


@torch.no_grad()
def swap_into(model: nn.Module, slot: Mapping[str, Tensor]) -> None:
    """Exchange the trainable parameters and ``slot`` in place, one parameter at a time.

    The only temporary is one parameter's size (never a copy of the model); calling it twice restores both.
    """
    named = dict(trainable_named(model))
    _check_names(named, slot)
    for n, p in named.items():
        s = slot[n]
        tmp = p.detach().clone()
        p.copy_(s, non_blocking=True)
        s.copy_(tmp, non_blocking=True)


class OpponentBank:
    """Named parameter slots of one model (see the module docstring).

    Args:
        model: the policy's module (its trainable parameters define a slot's layout).
        offload: keep slots (and the stored optimizer state) on the CPU, pinned when the model is on a
            GPU; ``False`` keeps them on the model's device.
    """

    def __init__(self, model: nn.Module, *, offload: bool = True) -> None:
        self.model = model
        self.offload = bool(offload)
        self.slots: dict[str, dict[str, Tensor]] = {}
        self._opt: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ slots
    def _alloc(self, p: Tensor) -> Tensor:
        if not self.offload or p.device.type == "cpu":
            return torch.empty_like(p, memory_format=torch.preserve_format)
        return torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=torch.cuda.is_available())

    @torch.no_grad()
    def store(self, name: str) -> dict[str, Tensor]:
        """``slot[name] <- theta`` (allocated on first use, then overwritten in place)."""
        named = trainable_named(self.model)
        slot = self.slots.get(name)
        if slot is None:
            slot = self.slots[name] = {n: self._alloc(p) for n, p in named}
        for n, p in named:
            slot[n].copy_(p.detach(), non_blocking=True)
        return slot

    def load(self, name: str) -> None:
        """``theta <- slot[name]`` in place."""
        copy_into(self.model, self._get(name))

    @contextmanager
    def swapped(self, name: str) -> Iterator[None]:
        """Inside the block the model holds ``slot[name]`` (and the slot the live parameters); undone on exit."""
        slot = self._get(name)
        swap_into(self.model, slot)
        try:
            yield
        finally:
            swap_into(self.model, slot)

    @torch.no_grad()
    def ema_update(self, name: str, beta: float) -> None:
        """``slot[name] <- (1 - beta) slot[name] + beta theta`` in place (Nash-EMA, SPEC §3.3)."""
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ema beta must be in [0, 1], got {beta}.")
        slot = self._get(name)
        for n, p in trainable_named(self.model):
            e = slot[n]
            e.mul_(1.0 - beta).add_(p.detach().to(e.device, e.dtype), alpha=beta)

    def drop(self, name: str) -> None:
        self.slots.pop(name, None)

    def exchange(self, name: str) -> None:
        """The live parameters and ``slot[name]`` trade places, in place (the slot then holds the old live ones)."""
        swap_into(self.model, self._get(name))

    def rename(self, old: str, new: str) -> None:
        """Slot ``old`` becomes slot ``new`` (its buffers are reused; a slot ``new`` is replaced)."""
        self.slots[new] = self._get(old)
        del self.slots[old]

    def __contains__(self, name: str) -> bool:
        return name in self.slots

    def _get(self, name: str) -> dict[str, Tensor]:
        if name not in self.slots:
            raise KeyError(f"the opponent bank has no slot {name!r} (slots: {sorted(self.slots)}).")
        return self.slots[name]

    def state_dict(
        self, names: tuple[str, ...] = ("previous", "ema", "half", "centre")
    ) -> dict[str, dict[str, Tensor]]:
        """CPU copies of the slots that live across iterations (for checkpoints)."""
        return {k: {n: t.detach().cpu().clone() for n, t in v.items()} for k, v in self.slots.items() if k in names}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Tensor]]) -> None:
        for name, tensors in state.items():
            named = dict(trainable_named(self.model))
            _check_names(named, tensors)
            slot = self.slots.get(name) or {n: self._alloc(p) for n, p in named.items()}
            for n, t in tensors.items():
                slot[n].copy_(t)
            self.slots[name] = slot

    # ------------------------------------------------------------------ optimizer state
    @torch.no_grad()
    def store_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Remember every per-parameter optimizer state tensor (host buffers, reused across iterations)."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        old = self._opt or []
        saved: list[dict[str, Any]] = []
        for i, p in enumerate(params):
            st = optimizer.state.get(p, {})
            prev = old[i] if i < len(old) else {}
            entry: dict[str, Any] = {}
            for key, v in st.items():
                if isinstance(v, Tensor):
                    buf = prev.get(key)
                    if not isinstance(buf, Tensor) or buf.shape != v.shape or buf.dtype != v.dtype:
                        buf = self._alloc(v)
                    buf.copy_(v, non_blocking=True)
                    entry[key] = buf
                else:
                    entry[key] = v
            saved.append(entry)
        self._opt = saved

    @torch.no_grad()
    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Put the stored state back, copying into the live state tensors in place (no second device copy).

        Parameters that had no state when it was stored (before the first step) get their state cleared.
        """
        if self._opt is None:
            raise RuntimeError("restore_optimizer before store_optimizer.")
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for p, entry in zip(params, self._opt):
            if not entry:
                optimizer.state.pop(p, None)
                continue
            live = optimizer.state.setdefault(p, {})
            for key, v in entry.items():
                cur = live.get(key)
                if isinstance(v, Tensor) and isinstance(cur, Tensor) and cur.shape == v.shape:
                    cur.copy_(v, non_blocking=True)
                elif isinstance(v, Tensor):
                    live[key] = v.to(p.device if v.dim() else v.device, copy=True)
                else:
                    live[key] = v

    # ------------------------------------------------------------------ accounting
    def copies(self) -> dict[str, float]:
        """Parameter-sized copies held, in units of the trainable parameter count: ``{"device", "host"}``."""
        size = sum(p.numel() for _, p in trainable_named(self.model)) or 1
        count = {"device": 0, "host": 0}
        tensors = [t for slot in self.slots.values() for t in slot.values()]
        tensors += [v for e in (self._opt or []) for v in e.values() if isinstance(v, Tensor) and v.dim()]
        for t in tensors:
            count["host" if t.device.type == "cpu" and self.offload else "device"] += t.numel()
        return {k: v / size for k, v in count.items()}
