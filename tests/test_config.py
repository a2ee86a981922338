"""Every yaml in configs/ composes into valid objects; out-of-range values are refused."""

from pathlib import Path

import pytest

from conftest import compose_config
from rlrun.config import Config, to_object
from rlrun.errors import RLRunError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALGOS = sorted(p.stem for p in (CONFIGS / "algo").glob("*.yaml"))
ENVS = sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml"))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env", ENVS)
def test_every_config_composes(algo, env):
    config = to_object(compose_config(f"algo={algo}", f"env={env}"))
    assert isinstance(config, Config)
    assert config.env.id == env


def test_overrides_reach_the_objects():
    config = to_object(compose_config("algo.lr=3e-4", "env.num_envs=16", "seed=7"))
    assert (config.algo.lr, config.env.num_envs, config.seed) == (3e-4, 16, 7)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.lr=0", "algo.lr must be > 0"),
        ("algo.gamma=0", "algo.gamma must be in (0, 1]"),
        ("algo.gae_lambda=1.1", "algo.gae_lambda must be in [0, 1]"),
        ("algo.clip_eps=-0.1", "algo.clip_eps must be > 0"),
        ("algo.epochs=0", "algo.epochs must be >= 1"),
        ("algo.target_kl=0", "algo.target_kl must be > 0 or null"),
        ("env.num_envs=0", "env.num_envs must be >= 1"),
        ("env.vectorization=threads", "env.vectorization must be one of"),
        ("policy.activation=gelu", "policy.activation must be tanh or relu"),
        ("total_timesteps=100", "less than one rollout"),
        ("algo.num_minibatches=5000", "exceeds the batch size"),
        ("eval_episodes=-1", "eval_episodes must be >= 0"),
    ],
)
def test_out_of_range_values_are_refused(override, message):
    with pytest.raises(RLRunError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        to_object(compose_config(override))
