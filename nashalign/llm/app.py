"""What the llm Hydra app's scripts (``llm/train.py``, ``llm/evaluate.py``) build the same way from ``conf/llm/llm.yaml``.

* :func:`load_data` -- the ``data`` group: the synthetic task (``data=synthetic``) or plain prompts;
* :func:`build_policy` -- the ``model`` group, with the Python objects it cannot hold (the task, the prompts);
* :func:`select_oracle` -- the ``oracle`` group, or the synthetic task's own oracle;
* :class:`BenchmarkSummary` -- re-exported from :mod:`nashalign.reporting.callbacks`.

The scripts stay plumbing and run by path; this module holds what they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nashalign.reporting.callbacks import BenchmarkSummary  # the report callback, shared with the tabular app

if TYPE_CHECKING:
    from nashalign.llm.synthetic import SyntheticTask

__all__ = ["select_oracle", "build_policy", "load_data", "BenchmarkSummary"]


def load_data(data_cfg: DictConfig) -> tuple[SyntheticTask | None, list[Any]]:
    """Instantiate the ``data`` group: ``(task, prompts)``, with ``task`` None unless it is a :class:`SyntheticTask`."""
    from nashalign.llm.synthetic import SyntheticTask

    data = instantiate(data_cfg)
    task = data if isinstance(data, SyntheticTask) else None
    prompts = list(task.prompts) if task is not None else list(data)
    return task, prompts


def build_policy(
    model_cfg: DictConfig, task: SyntheticTask | None, prompts: list[Any], device: Any = None
) -> Any:
    """Instantiate the ``model`` group, passing the task and the prompts for its ``???`` slots.

    A group with a ``task`` slot (``model=tiny``) needs the synthetic task; a ``prompts`` slot gets ``prompts``.
    ``device`` (this process's Accelerate device) fills a ``device: null`` entry, so that under
    ``accelerate launch`` every rank builds its model on its own GPU.

    Raises:
        ValueError: the group needs the task but ``data`` is not the synthetic benchmark, or a required
            entry (e.g. ``model.name_or_path`` of ``model=hf``) is not set.
    """
    model_keys = set(model_cfg.keys())
    if "task" in model_keys and task is None:
        raise ValueError("model=tiny is built for the synthetic benchmark; use it with data=synthetic (or model=hf).")
    missing = [k for k in model_keys - {"task", "prompts"} if OmegaConf.is_missing(model_cfg, k)]
    if missing:
        raise ValueError(
            f"the model group needs {', '.join(f'model.{k}' for k in sorted(missing))}: set "
            + " ".join(f"model.{k}=..." for k in sorted(missing))
            + " (e.g. model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct or a local directory)."
        )
    extra: dict[str, Any] = {"task": task} if "task" in model_keys else {}
    if "prompts" in model_keys:
        extra["prompts"] = prompts
    values = OmegaConf.to_container(model_cfg, resolve=True)
    for key in extra:
        values.pop(key, None)
    if device is not None and "device" in values and values["device"] is None and not values.get("device_map"):
        values["device"] = str(device)
    return instantiate(values, _partial_=True)(**extra)


def _user_oracle(cfg: DictConfig) -> str | None:
    """The oracle the user configured on the command line (a group choice or ``oracle.*`` override), if any."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
    except (ImportError, ValueError):  # pragma: no cover
        return None
    choice = hc.runtime.choices.get("oracle")
    overridden = [o for o in hc.overrides.task if o.lstrip("+~").split("=", 1)[0].split(".")[0] == "oracle"]
    return choice if overridden or choice != "class_matrix" else None


def select_oracle(cfg: DictConfig, task: SyntheticTask | None, device: Any = None) -> Any:
    """The judge: the synthetic task's exact oracle when ``benchmark.use_task_oracle``, else the ``oracle`` group.

    ``device`` fills the oracle's ``device: null`` entry (a model-based oracle then sits on this process's
    device, not on ``cuda:0`` of every rank).

    Raises:
        ValueError: an oracle was configured (``oracle=...`` or ``oracle.*=...``) while the benchmark's own
            oracle is switched on: it would be silently ignored.
    """
    if task is not None and cfg.benchmark.use_task_oracle:
        chosen = _user_oracle(cfg)
        if chosen is not None:
            raise ValueError(
                f"oracle={chosen} is configured, but benchmark.use_task_oracle=true trains with the synthetic "
                f"task's own oracle and would ignore it. Set benchmark.use_task_oracle=false to train with "
                f"oracle={chosen} (the exact evaluation still scores the task's game), or drop the oracle override."
            )
        return task.oracle()
    oracle_cfg = cfg.oracle
    if device is not None and OmegaConf.select(oracle_cfg, "oracle.device", default="absent") is None:
        oracle_cfg = OmegaConf.merge(oracle_cfg, {"oracle": {"device": str(device)}})
    return instantiate(oracle_cfg)
