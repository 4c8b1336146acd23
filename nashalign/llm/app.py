"""What the llm Hydra app's scripts (``llm/train.py``, ``llm/evaluate.py``) build the same way from ``conf/llm.yaml``.

* :func:`load_data` -- the ``data`` group: the synthetic task (``data=synthetic``) or plain prompts;
* :func:`build_policy` -- the ``model`` group, with the Python objects it cannot hold (the task, the prompts);
* :func:`select_oracle` -- the ``oracle`` group, or the synthetic task's own oracle.

The scripts stay plumbing and run by path; this module holds what they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

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


def build_policy(model_cfg: DictConfig, task: SyntheticTask | None, prompts: list[Any]) -> Any:
    """Instantiate the ``model`` group, passing the task and the prompts for its ``???`` slots.

    A group with a ``task`` slot (``model=tiny``) needs the synthetic task; a ``prompts`` slot gets ``prompts``.

    Raises:
        ValueError: the group needs the task but ``data`` is not the synthetic benchmark.
    """
    model_keys = set(model_cfg.keys())
    if "task" in model_keys and task is None:
        raise ValueError("model=tiny is built for the synthetic benchmark; use it with data=synthetic (or model=hf).")
    extra: dict[str, Any] = {"task": task} if "task" in model_keys else {}
    if "prompts" in model_keys:
        extra["prompts"] = prompts
    values = OmegaConf.to_container(model_cfg, resolve=True)
    for key in extra:
        values.pop(key, None)
    return instantiate(values, _partial_=True)(**extra)


def select_oracle(cfg: DictConfig, task: SyntheticTask | None) -> Any:
    """The judge: the synthetic task's exact oracle when ``benchmark.use_task_oracle``, else the ``oracle`` group."""
    if task is not None and cfg.benchmark.use_task_oracle:
        return task.oracle()
    return instantiate(cfg.oracle)


class BenchmarkSummary(Callback):
    """Hydra callback: after a multirun, write ``summary.md`` and ``curves.png`` from every job's metrics.

    Registered by ``conf/experiment/lm_benchmark.yaml`` under ``hydra.callbacks``.
    """

    def __init__(self, keys: Sequence[str] = ("exploitability", "kl_target"), filename: str = "curves.png") -> None:
        self.keys = list(keys)
        self.filename = filename

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        self.write(root)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:  # single run: the run's own directory
        from hydra.core.hydra_config import HydraConfig

        self.write(Path(HydraConfig.get().runtime.output_dir))

    def write(self, root: Path) -> None:
        from nashalign.llm.runs import collect_runs, plot_curves, summary_table

        runs = collect_runs(root)
        if not runs:
            return
        table = summary_table(runs, self.keys)
        (root / "summary.md").write_text(table + "\n", encoding="utf-8")
        plot_curves(runs, root / self.filename, self.keys)
        print(table)
        print(f"curves: {root / self.filename}")
