"""Every option of every group of the tabular app composes (Hydra Compose API) and instantiates.

Also: the presets compose with the grids they promise, and bad values fail with messages that say what
to change.  Nothing here runs the app (see test_tabular_smoke.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from hydra.types import RunMode
from hydra.utils import instantiate

import nashalign
from nashalign import configs
from nashalign.algorithms import ALGORITHMS, Algorithm
from nashalign.game import PreferenceGame

CONF = Path(__file__).resolve().parents[2] / "conf" / "tabular"  # the app's config dir (conf/README.md)
GAMES = sorted(p.stem for p in (CONF / "game").glob("*.yaml"))
ALGOS = sorted(p.stem for p in (CONF / "algorithm").glob("*.yaml"))
RUNS = sorted(p.stem for p in (CONF / "run").glob("*.yaml"))
DEMO_GAMES = {"rps", "population", "random50"}


def compose_tabular(overrides=(), hydra_cfg=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("tabular", overrides=list(overrides), return_hydra_config=hydra_cfg)


def test_groups_are_complete():
    assert set(ALGORITHMS) <= set(ALGOS), "every registered algorithm needs conf/algorithm/<name>.yaml"
    assert set(ALGOS) - set(ALGORITHMS) == {"nash_md_pg"}
    assert DEMO_GAMES <= set(GAMES)
    assert set(RUNS) == {"exact", "sampled"}


@pytest.mark.parametrize("name", ALGOS)
def test_algorithm_option(name):
    cfg = compose_tabular([f"algorithm={name}"])
    assert {"_target_", "eta", "tau"} <= set(cfg.algorithm)
    alg = instantiate(cfg.algorithm)
    assert isinstance(alg, Algorithm)
    assert type(alg) is ALGORITHMS[alg.name]
    assert alg.eta == cfg.algorithm.eta and alg.tau == cfg.algorithm.tau
    assert (alg.tau == 0) == (alg.tau_rule == "zero")  # the demo's split: tau = 0 only for unregularised rules
    assert instantiate(compose_tabular([f"algorithm={name}", "algorithm.eta=0.37"]).algorithm).eta == 0.37


def test_nash_md_pg_is_nash_md_with_free_mixture():
    alg = instantiate(compose_tabular(["algorithm=nash_md_pg"]).algorithm)
    assert alg.name == "nash_md" and alg.mixture == 0.125
    alg = instantiate(compose_tabular(["algorithm=nash_md", "algorithm.mixture=0.5"]).algorithm)
    assert alg.mixture == 0.5


@pytest.mark.parametrize("name", GAMES)
def test_game_option(name):
    cfg = compose_tabular([f"game={name}"])
    game = instantiate(cfg.game)
    assert isinstance(game, PreferenceGame)
    res = nashalign.solve(game, "egpo", eta=0.1, tau=0.1, steps=3, target=None)
    assert np.allclose(np.asarray(res.last).sum(-1), 1.0)


def test_demo_games_have_the_promised_shapes():
    shapes = {g: instantiate(compose_tabular([f"game={g}"]).game) for g in DEMO_GAMES}
    assert shapes["rps"].num_responses == 3
    assert shapes["random50"].num_responses == 50 and shapes["random50"].num_contexts == 1
    pi = nashalign.solve_nash(shapes["population"])
    assert (pi > 1e-6).sum() >= 3, "the population game should have a mixed equilibrium"


@pytest.mark.parametrize("name", RUNS)
def test_run_option(name):
    cfg = compose_tabular([f"run={name}"])
    run = configs.run_settings(cfg.run)
    assert isinstance(run, configs.RunConfig)
    assert run.mode == name
    assert run.steps >= 1


def test_sampled_run_with_an_oracle_config():
    cfg = compose_tabular(["run=sampled", "+oracle=matrix", "game=rps"])
    oracle = instantiate(cfg.oracle)
    game = instantiate(cfg.game)
    res = nashalign.solve(
        game, "egpo", eta=0.5, tau=0.1, steps=2, mode="sampled", batch=8, inner_steps=2, oracle=oracle, target=None
    )
    assert res.history.last("queries") > 0


def test_demo_preset_is_the_full_multirun_grid():
    cfg = compose_tabular(["+experiment=demo"], hydra_cfg=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = cfg.hydra.sweeper.params
    assert set(params.algorithm.split(",")) == set(ALGORITHMS)
    assert params.algorithm.split(",") == sorted(ALGORITHMS)  # ${nashalign_algorithms:}: nothing listed by hand
    assert set(params.game.split(",")) == DEMO_GAMES
    assert cfg.hydra.callbacks.summary._target_ == "nashalign.configs.SweepSummary"
    assert cfg.run.steps * len(ALGORITHMS) * 3 <= 100_000  # about a minute on 2 cores


@pytest.mark.parametrize(
    "beta_file, beta, steps, eta",
    [("beta0.1", 0.1, 1000, 0.4), ("beta0.01", 0.01, 5000, 0.8), ("beta0.001", 0.001, 100_000, 0.08)],
)
def test_egpo_preset_maps_the_repo_configs(beta_file, beta, steps, eta):
    cfg = compose_tabular(["+experiment=egpo_tabular"], hydra_cfg=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert set(cfg.hydra.sweeper.params["algorithm.baseline"].split(",")) == set(configs.EGPO_BASELINES)
    for baseline in configs.EGPO_BASELINES:
        cfg = compose_tabular(["+experiment=egpo_tabular", f"egpo_beta={beta_file}", f"algorithm.baseline={baseline}"])
        assert cfg.run.steps == steps and cfg.run.label == baseline
        game = instantiate(cfg.game)
        assert (game.num_contexts, game.num_responses) == (10, 10)
        alg = instantiate(cfg.algorithm)
        assert alg.tau == pytest.approx(beta)
        if baseline == "oipo2":  # its eta is the SGD learning rate itself
            assert alg.name == "online_ipo" and alg.eta == pytest.approx(cfg.algorithm.lr)
        else:
            assert alg.eta == pytest.approx(eta)  # 4 lr / (N beta)
        if baseline == "nash_md":
            assert alg.mixture == pytest.approx(2 * cfg.algorithm.lr / 10)  # the repo's true_lr * beta
        if baseline == "nash_md_pg":
            assert alg.mixture == 0.125


def test_egpo_oipo1_is_one_sgd_step_of_the_uniform_loss():
    """SPEC.md 5.2: one SGD step (lr) of the loss averaged over the N^2 ordered pairs = OMD with eta = 4 lr/(N beta)."""
    import torch

    rng = np.random.default_rng(0)
    game = nashalign.games.random_game(6, seed=1, ref="random")
    P = np.asarray(game.P[0])
    beta, lr, N = 0.05, 0.01, 6
    theta = torch.tensor(np.log(np.asarray(game.ref[0])) + 0.3 * rng.normal(size=N), requires_grad=True)
    logmu = torch.tensor(np.log(np.asarray(game.ref[0])))
    logp = torch.log_softmax(theta, 0)
    h = logp - logmu
    w = torch.tensor(P) @ torch.softmax(theta, 0).detach()
    loss = (((h[:, None] - h[None, :]) - (w[:, None] - w[None, :]) / beta) ** 2).sum() / N**2
    loss.backward()
    sgd = torch.log_softmax(theta - lr * theta.grad, 0).detach().numpy()
    alg = configs.egpo_repo_algorithm("oipo1", beta=beta, lr=lr, num_responses=N)
    st = alg.init(np.log(torch.softmax(theta, 0).detach().numpy())[None], logmu.numpy()[None])
    st = alg.update(st, P[None] @ np.exp(st.logp)[0])
    np.testing.assert_allclose(st.logp[0], sgd, atol=1e-10)


# ------------------------------------------------------------------ bad values give clear errors
def test_unknown_algorithm_lists_the_options():
    with pytest.raises(MissingConfigException, match=r"algorithm/nope") as err:
        compose_tabular(["algorithm=nope"])
    assert "egpo" in str(err.value) and "nash_md" in str(err.value)


@pytest.mark.parametrize("name", ["nash_md", "omd", "inpo", "online_ipo"])
def test_regularised_rule_needs_positive_tau(name):
    cfg = compose_tabular([f"algorithm={name}", "algorithm.tau=0"])
    with pytest.raises(InstantiationException, match="tau must be > 0"):
        instantiate(cfg.algorithm)


def test_unregularised_rule_needs_zero_tau():
    cfg = compose_tabular(["algorithm=mwu", "algorithm.tau=0.1"])
    with pytest.raises(InstantiationException, match="tau must be 0"):
        instantiate(cfg.algorithm)


def test_negative_eta_is_rejected():
    with pytest.raises(InstantiationException, match="eta"):
        instantiate(compose_tabular(["algorithm=egpo", "algorithm.eta=-1"]).algorithm)


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.steps=-5", "run.steps must be >= 1"),
        ("run.steps=0", "run.steps must be >= 1"),
        ("run.record_every=0", "run.record_every must be >= 1"),
        ("run.mode=approx", "run.mode must be 'exact' or 'sampled'"),
        ("run.backend=jax", "run.backend must be"),
        ("run.target=maybe", "run.target must be"),
    ],
)
def test_bad_run_values(override, message):
    cfg = compose_tabular([override])
    with pytest.raises(ValueError, match=message):
        configs.run_settings(cfg.run)


@pytest.mark.parametrize("override", ["run.stepz=5", "run.steps=abc"])
def test_run_schema_catches_typos_and_types_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_tabular([override])


def test_bad_game_value():
    with pytest.raises(InstantiationException, match="eps must lie in"):
        instantiate(compose_tabular(["game=rps", "game.eps=2"]).game)


def test_bad_egpo_baseline():
    with pytest.raises(ValueError, match="unknown EGPO baseline"):
        configs.egpo_repo_algorithm("ppo", beta=0.1, lr=0.1, num_responses=10)


def test_bad_summary_settings():
    with pytest.raises(ValueError, match="unknown metric"):
        configs.SweepSummary(metric="accuracy")
    with pytest.raises(ValueError, match="x_axis"):
        configs.SweepSummary(x_axis="time")
