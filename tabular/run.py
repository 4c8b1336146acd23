"""The tabular app: run one algorithm on one preference game, exactly or from sampled feedback.

One run is ``game x algorithm x run settings`` (config groups in ``conf/``); ``-m`` sweeps grids:

    python tabular/run.py game=random50 algorithm=egpo algorithm.eta=0.5
    python tabular/run.py -m algorithm=egpo,omd,nash_md game=rps,population algorithm.eta=0.05,0.1,0.5
    python tabular/run.py run=sampled algorithm=egpo algorithm.eta=0.5
    python tabular/run.py +experiment=demo           # `make demo`
    python tabular/run.py +experiment=egpo_tabular   # EGPO's exact tabular comparison
    python tabular/run.py 'game={_target_: nashalign.games.PreferenceGame, P: [[0.5, 0.8], [0.2, 0.5]]}'

Each run writes ``history.json``, ``history.csv``, ``result.json`` and ``run.json`` into its output
directory and logs a one-line summary; the ``SweepSummary`` callback (``hydra.callbacks.summary``) then
writes ``summary.md``/``summary.csv`` and ``plot_<game>.png`` and prints the table.  All logic lives in
:mod:`nashalign.configs` and :mod:`nashalign.reporting`; this file is plumbing.  See tabular/README.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import nashalign
from nashalign import configs, reporting

log = logging.getLogger("tabular")


@hydra.main(version_base="1.3", config_path="../conf/tabular", config_name="tabular")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)  # never rely on a changed working directory
    multirun = hc.mode == RunMode.MULTIRUN
    choices = hc.runtime.choices

    # ---- build everything from the config (bad values raise here, with the constructor's message)
    run = configs.run_settings(cfg.run)
    game = instantiate(cfg.game)
    algorithm = configs.instantiate_algorithm(cfg.algorithm)  # null keys = the constructor's defaults
    oracle = instantiate(cfg.oracle) if cfg.get("oracle") is not None else None
    game_name = choices.get("game") or "inline"
    label = run.label or configs.algorithm_label(cfg.algorithm, choices.get("algorithm"), algorithm)

    # ---- the exact equilibrium the run is measured against (cvxpy, once per game config and tau)
    target, target_kind = None, None
    if run.target == "auto":
        target, target_kind = configs.reference_target(
            game,
            getattr(algorithm, "target_tau", algorithm.tau),  # prox-point rules (mpo, comal, nash_prox) target another tau
            key=OmegaConf.to_yaml(cfg.game, resolve=True),
            cache_dir=hc.sweep.dir if multirun else None,
        )

    # ---- solve
    sampled = {}
    if run.mode == "sampled":
        sampled = dict(
            batch=run.batch, inner_steps=run.inner_steps, optimizer=run.optimizer, lr=run.lr,
            estimator=run.estimator, oracle=oracle,
        )  # fmt: skip
    result = nashalign.solve(
        game,
        algorithm,
        steps=run.steps,
        record_every=run.record_every,
        mode=run.mode,
        backend=run.backend,
        device=run.device,
        seed=run.seed,
        target=target,
        tol=run.tol,
        throw=run.throw,
        progress=run.progress,
        **sampled,
    )

    # ---- outputs
    record = reporting.run_record(
        result,
        game,
        game_name=game_name,
        label=label,
        target=target,
        target_kind=target_kind,
        target_tau=getattr(algorithm, "target_tau", None),
        extra={
            "job": int(hc.job.num) if multirun else None,
            "overrides": list(hc.overrides.task),
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )
    reporting.write_run(out_dir, result, record)
    log.info("%s%s", configs.job_tag(), reporting.one_line(record))
    if not multirun:
        log.info("outputs: %s", out_dir)
    return float(result.history.last("reg_expl_last" if getattr(algorithm, "target_tau", algorithm.tau) > 0 else "expl_last"))


if __name__ == "__main__":
    sys.argv = configs.inline_group_overrides(sys.argv, groups=("game", "algorithm"))  # game='{_target_: ...}'
    main()
