"""Hydra composition of the llm app (conf/llm/llm.yaml): every option of every group, the presets, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nashalign.algorithms import ALGORITHMS, Algorithm
from nashalign.algorithms.registry import register_sweep_resolver
from nashalign.llm.trainer import TrainerConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "llm"  # the app's config dir (conf/README.md)
GROUPS = ("algorithm", "model", "oracle", "data", "trainer")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="llm", overrides=list(overrides))


def trainer_config(cfg) -> TrainerConfig:
    values = OmegaConf.to_container(cfg.trainer, resolve=True)
    values["output_dir"] = values["output_dir"] or "unused"
    return TrainerConfig.from_mapping(values)


def test_defaults_compose_to_the_tiny_benchmark():
    cfg = make()
    assert [cfg.algorithm._target_, cfg.model._target_, cfg.data._target_] == [
        "nashalign.algorithms.NashMD",
        "nashalign.llm.synthetic.build_tiny_policy",
        "nashalign.llm.synthetic.build_task",
    ]
    tc = trainer_config(cfg)
    assert tc.cpu and tc.mixed_precision == "no" and tc.seed == cfg.seed


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    names = options(group)
    assert names, f"conf/{group} is empty"
    for name in names:
        cfg = make([f"{group}={name}"])
        node = cfg[group]
        assert node is not None
        if group == "trainer":
            tc = trainer_config(cfg)
            assert (tc.lora is not None) == (name == "lora")
        elif group in ("algorithm", "data", "model", "oracle"):
            assert "_target_" in node


def test_every_registered_algorithm_has_a_config_that_instantiates():
    assert set(ALGORITHMS) <= set(options("algorithm"))
    for name in options("algorithm"):
        alg = instantiate(make([f"algorithm={name}"]).algorithm)
        assert isinstance(alg, Algorithm)


def test_model_groups_take_their_inputs_from_the_app():
    assert OmegaConf.is_missing(make().model, "task")
    hf = make(["model=hf", "model.name_or_path=/some/path", "trainer=lora"])
    assert hf.model.lora.r == 16 and hf.model.name_or_path == "/some/path"  # lora comes from the trainer group
    assert make(["model=hf", "model.name_or_path=x"]).model.lora is None
    scratch = make(["model=qwen0p5b_scratch"]).model
    assert OmegaConf.is_missing(scratch, "prompts") and scratch.hidden_size == 896


def test_data_configs_load_prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello"}\n{"prompt": "name a colour"}\n')
    assert instantiate(make(["data=jsonl", f"data.source={path}"]).data) == ["hello", "name a colour"]
    csv = tmp_path / "p.csv"
    csv.write_text("question\nwhy?\nhow?\n")
    assert instantiate(make(["data=jsonl", f"data.source={csv}", "data.field=question"]).data) == ["why?", "how?"]
    task = instantiate(make().data)
    assert len(task.prompts) == 3


@pytest.mark.parametrize("name", ["lm_benchmark", "lm_benchmark_demo"])
def test_experiment_presets_compose(name):
    cfg = make([f"+experiment={name}"])
    tc = trainer_config(cfg)
    assert tc.k == 4 and cfg.benchmark.tau > 0
    assert cfg.model._target_.endswith("build_tiny_policy")


def test_benchmark_sweeps_every_registered_algorithm():
    register_sweep_resolver()  # what llm/train.py does on import, before Hydra builds the sweeper
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="llm", overrides=["+experiment=lm_benchmark"], return_hydra_config=True)
    sweep = cfg.hydra.sweeper.params.algorithm  # resolved here: ${nashalign_algorithms:}
    assert set(sweep.split(",")) == set(ALGORITHMS)
    assert sweep.split(",") == sorted(ALGORITHMS)
    text = (CONF / "experiment" / "lm_benchmark.yaml").read_text()  # no name is listed by hand
    assert yaml.safe_load(text)["hydra"]["sweeper"]["params"]["algorithm"] == "${nashalign_algorithms:}"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("trainer.minibatch_size=0", "trainer.minibatch_size must be an integer >= 1"),
        ("trainer.optimizer=lion", "trainer.optimizer must be one of"),
        ("trainer.estimator=bogus", "trainer.estimator must be one of"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision must be one of"),
        ("+trainer.iterationz=3", "unknown trainer setting"),
    ],
)
def test_bad_trainer_values_give_clear_errors(override, match):
    with pytest.raises(ValueError, match=match):
        trainer_config(make([override]))


def test_bad_algorithm_values_give_clear_errors():
    with pytest.raises(Exception, match="tau must be > 0"):
        instantiate(make(["algorithm=nash_md", "algorithm.tau=0"]).algorithm)


def test_accelerate_configs_are_valid_accelerate_files():
    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted((CONF.parent / "accelerate").glob("*.yaml"))  # not a Hydra group: beside the apps' dirs
    assert {p.stem for p in files} == {"ddp", "fsdp", "deepspeed_zero2"}
    kinds = set()
    for path in files:
        cfg = ClusterConfig.from_yaml_file(str(path))
        kinds.add(str(cfg.distributed_type))
    assert {k.split(".")[-1] for k in kinds} == {"MULTI_GPU", "FSDP", "DEEPSPEED"}
