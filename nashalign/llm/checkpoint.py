"""Checkpoints of :class:`~nashalign.llm.trainer.NashTrainer`: atomic, and bit-identical on resume.

A checkpoint ``output_dir/checkpoints/iter-NNNNNN/`` holds ``accelerator.save_state`` (model, optimizer,
scheduler, every RNG), the opponent bank's persistent slots (``opponent_state.pt``) and
``trainer_state.json`` (iteration, global query counts, sampling generators, history, config).

Atomicity: everything is written into ``iter-NNNNNN.tmp-<pid>/`` and renamed into place only when
complete (``os.replace`` of a directory on one filesystem), so a process killed during the write (even
``kill -9``) leaves either the previous checkpoints or the new complete one; leftover ``*.tmp-*``
directories are ignored by :func:`latest_checkpoint` and removed by the next save.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["latest_checkpoint", "save_checkpoint", "load_checkpoint", "STATE_FILE", "EXTRA_FILE", "RUN_ARTIFACTS"]

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
EXTRA_FILE = "opponent_state.pt"
#: What a run writes into its output_dir (a directory holding any of them holds a run).
RUN_ARTIFACTS = ("metrics.jsonl", "checkpoints", "final")
_DONE = re.compile(r"iter-\d+")


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint (one holding ``trainer_state.json``) under ``output_dir/checkpoints``."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if _DONE.fullmatch(p.name) and (p / STATE_FILE).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def encode_rng(state: torch.Tensor) -> str:
    return base64.b64encode(bytes(state.cpu().to(torch.uint8).tolist())).decode("ascii")


def decode_rng(text: str) -> torch.Tensor:
    return torch.tensor(list(base64.b64decode(text)), dtype=torch.uint8)


def save_checkpoint(trainer: Any, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``trainer``'s full state atomically to ``path`` (default ``checkpoints/iter-<iteration>``)."""
    acc = trainer.accelerator
    final = Path(path) if path is not None else trainer.output_dir / "checkpoints" / f"iter-{trainer.iteration:06d}"
    # One temporary name for every rank (the main process's pid, broadcast through the shared filesystem name).
    tmp = final.with_name(final.name + ".tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    # safe_serialization=False: torch.save keeps tied weights as they are (safetensors drops shared tensors
    # and warns "Removed shared tensor"); the files are this library's own, read back by load_state.
    acc.save_state(str(tmp), safe_serialization=False)
    if acc.is_main_process:
        torch.save(trainer.bank.state_dict(), tmp / EXTRA_FILE)
        state = {
            "iteration": trainer.iteration,
            "queries": trainer.queries,
            "eval_queries": trainer.eval_queries,
            "algorithm": trainer.alg.name,
            "generator": encode_rng(trainer.generator.get_state()),
            "shuffle_generator": encode_rng(trainer.shuffle_generator.get_state()),
            "history": trainer.history,
            "config": trainer.config.to_dict(),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # the checkpoint appears complete or not at all
        _rotate(trainer.output_dir / "checkpoints", trainer.config.save_total_limit)
    acc.wait_for_everyone()
    return final


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())


def _rotate(root: Path, limit: int | None) -> None:
    if not root.is_dir():
        return
    for stale in root.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    if not limit:
        return
    done = sorted((p for p in root.iterdir() if _DONE.fullmatch(p.name)), key=lambda p: int(p.name.split("-")[1]))
    for old in done[:-limit]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(trainer: Any, path: str | os.PathLike[str]) -> None:
    """Restore everything :func:`save_checkpoint` saved; training continues at the saved iteration."""
    path = Path(path)
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(
            f"{path} is not a complete nashalign checkpoint (no {STATE_FILE}); pick a directory under "
            f"{trainer.output_dir / 'checkpoints'} or set trainer.resume=true for the newest one."
        )
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("algorithm") != trainer.alg.name:
        raise ValueError(
            f"checkpoint {path} was written by {state.get('algorithm')!r}, but this run trains "
            f"{trainer.alg.name!r}; use a different trainer.output_dir."
        )
    acc = trainer.accelerator
    acc.load_state(str(path))
    if (path / EXTRA_FILE).exists():
        trainer.bank.load_state_dict(torch.load(path / EXTRA_FILE, map_location="cpu"))
    trainer.iteration = int(state["iteration"])
    trainer.queries = int(state["queries"])
    trainer.eval_queries = int(state.get("eval_queries", 0))
    trainer.generator.set_state(decode_rng(state["generator"]))
    trainer.shuffle_generator.set_state(decode_rng(state["shuffle_generator"]))
    trainer.history = list(state.get("history", []))
    if acc.is_main_process:  # metrics.jsonl = history up to the checkpoint (drop later lines)
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        with open(trainer.output_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
            for row in trainer.history:
                fh.write(json.dumps({"algorithm": trainer.alg.name, **row}) + "\n")
    log.info("resumed from %s at iteration %d", path, trainer.iteration)


def prepare_output_dir(output_dir: Path, *, resume: bool | str, overwrite: bool, state: Any) -> None:
    """Refuse to start a fresh run where one already is (as ``transformers`` does), unless asked.

    Only the main process looks (and, with ``overwrite``, deletes the old run's files): the others write no run
    files, and a refusal on the main process stops the whole launch.

    Raises:
        ValueError: ``output_dir`` holds a run (:data:`RUN_ARTIFACTS`) and neither ``resume`` nor ``overwrite``.
    """
    if not state.is_main_process:
        return
    found = [name for name in RUN_ARTIFACTS if (output_dir / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise ValueError(
            f"output_dir {str(output_dir)!r} already holds a run ({', '.join(found)}); a new run would mix its "
            "metrics and checkpoints with the old ones. Set trainer.resume=true to continue it, "
            "trainer.overwrite_output_dir=true to replace it, or choose another trainer.output_dir."
        )
    for name in found:
        target = output_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
