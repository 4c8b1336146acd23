"""Every file of the Hydra group conf/oracle/ composes and instantiates to a working oracle."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nashalign.oracles import (
    ClassMatrixOracle,
    GPMOracle,
    JudgeAdapter,
    LLMJudgeOracle,
    MatrixOracle,
    PairwiseClassifierOracle,
    PreferenceOracle,
    RewardModelOracle,
    SymmetrizedOracle,
    ValidatedOracle,
    build_oracle,
    check_oracle,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
PROMPTS = ["say hello", "name a colour"]
FIRST = ["hello there", "blue"]
SECOND = ["hi", "a very long answer"]


def make(name, overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=f"oracle/{name}", overrides=list(overrides))
    oracle = instantiate(cfg.oracle)
    assert isinstance(oracle, PreferenceOracle)
    return oracle


def test_every_oracle_config_is_tested():
    files = {p.stem for p in (CONF / "oracle").glob("*.yaml")}
    assert files == {
        "matrix",
        "class_matrix",
        "reward_model",
        "pairwise",
        "gpm",
        "llm_judge",
        "function",
        "trl_judge",
        "served",  # tested in test_served_cache.py / test_served.py
    }


def test_matrix_config_takes_the_game_node():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="oracle/matrix", overrides=["oracle.oracle.bernoulli=true", "oracle.oracle.seed=3"])
    OmegaConf.set_struct(cfg, False)
    cfg.game = [[0.5, 0.2], [0.8, 0.5]]  # what the app's `game` node interpolates to (here a plain matrix)
    oracle = instantiate(cfg.oracle)
    assert isinstance(oracle, MatrixOracle) and oracle.bernoulli  # validate: false keeps the hot path bare
    n = 2000
    out = oracle(torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))
    assert set(out.tolist()) == {0.0, 1.0} and abs(out.mean().item() - 0.8) < 0.05


@pytest.mark.skipif(not (CONF / "game" / "rps.yaml").exists(), reason="conf/game/rps.yaml not present")
def test_matrix_config_with_the_game_group():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="oracle/matrix")
    OmegaConf.set_struct(cfg, False)
    cfg.game = OmegaConf.load(CONF / "game" / "rps.yaml")  # the app's `game` node: a _target_ config
    oracle = instantiate(cfg.oracle)
    assert isinstance(oracle, MatrixOracle)
    p = oracle([0, 0, 0], [1, 2, 0], [0, 1, 0])  # paper > rock, scissors > paper, rock vs rock
    assert p[2].item() == 0.5 and bool((p[:2] > 0.5).all())


def test_class_matrix_config_defaults_to_rock_paper_scissors():
    oracle = make("class_matrix")
    assert isinstance(oracle, ValidatedOracle) and isinstance(oracle.unwrap(), ClassMatrixOracle)
    p = oracle(["play"] * 3, ["Paper", "rock", "lizard"], ["rock ", "PAPER", "scissors"])
    assert p.tolist() == [1.0, 0.0, 0.0]


def test_reward_model_config(tiny_models):
    oracle = make("reward_model", [f"oracle.oracle.name_or_path={tiny_models['reward']}", "oracle.oracle.device=cpu"])
    assert isinstance(oracle.unwrap(), RewardModelOracle)
    p = oracle(PROMPTS, FIRST, SECOND)
    torch.testing.assert_close(p + oracle(PROMPTS, SECOND, FIRST), torch.ones(2), atol=1e-6, rtol=0)


def test_pairwise_config_is_symmetrized(tiny_models):
    oracle = make("pairwise", [f"oracle.oracle.name_or_path={tiny_models['pair']}", "oracle.oracle.device=cpu"])
    assert isinstance(oracle, SymmetrizedOracle) and isinstance(oracle.unwrap(), PairwiseClassifierOracle)
    assert check_oracle(oracle, PROMPTS, FIRST + SECOND, num_pairs=8).consistent(tol=0.0)


def test_llm_judge_config(tiny_models):
    oracle = make(
        "llm_judge",
        [
            f"oracle.oracle.name_or_path={tiny_models['judge']}",
            "oracle.oracle.device=cpu",
            "oracle.wrappers.cache=true",
        ],
    )
    assert isinstance(oracle.unwrap(), LLMJudgeOracle)
    p = oracle(PROMPTS, FIRST, SECOND)
    assert torch.equal(p + oracle(PROMPTS, SECOND, FIRST), torch.ones(2, dtype=torch.float64))
    assert (oracle.hits, oracle.misses) == (0, 4)
    assert torch.equal(oracle(PROMPTS, FIRST, SECOND), p)
    assert (oracle.hits, oracle.misses) == (2, 4)


def test_gpm_config_defaults_to_minilm(minilm_path):
    oracle = make("gpm", ["oracle.oracle.device=cpu", "oracle.oracle.dim=8", "oracle.oracle.seed=5"])
    gpm = oracle.unwrap()
    assert isinstance(gpm, GPMOracle) and gpm.projection.shape == (8, 384)
    assert check_oracle(oracle, PROMPTS, FIRST + SECOND, num_pairs=8).max_asymmetry < 1e-12


def test_function_config(user_module):
    oracle = make("function", [f"oracle.oracle.fn={user_module}.longer_wins", "oracle.wrappers.retry=2"])
    assert oracle(PROMPTS, FIRST, SECOND).tolist() == [1.0, 0.0]
    assert oracle.attempts == 2


def test_trl_judge_config(user_module):
    oracle = make("trl_judge", [f"oracle.oracle.judge={{_target_:{user_module}.LengthJudge}}"])
    assert isinstance(oracle.unwrap(), JudgeAdapter)
    # symmetrized: a tie is 1/2 although the judge itself prefers the first position
    assert oracle(["q", "q"], ["abc", "ab"], ["ab", "xy"]).tolist() == [1.0, 0.5]


def test_build_oracle_options():
    calls = []

    def oracle(prompts, first, second):
        calls.append(len(prompts))
        return torch.full((len(prompts),), 0.5)

    built = build_oracle(oracle, wrappers={"batch_size": 3, "count": True, "symmetrize": True})
    built(["x"] * 4, ["a"] * 4, ["b"] * 4)
    assert calls == [3, 3, 2] and (built.counter.calls, built.counter.queries) == (3, 8)
    with pytest.raises(ValueError, match=r"Unknown oracle wrapper option\(s\) \['symetrize'\]"):
        build_oracle(oracle, wrappers={"symetrize": True})
    with pytest.raises(TypeError, match="retry must be"):
        build_oracle(oracle, retry="often")
