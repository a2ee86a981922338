"""The yaml files and the schemas agree; out-of-range values are refused. (That every env
config composes with every algorithm, into the right dataclasses, is checked by the training
matrix in test_envs.py.)"""

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf

from helpers import ALGOS, compose_config
from rlrun import launch
from rlrun.algos import ALGORITHMS
from rlrun.config import Config, EnvConfig, PolicyConfig, to_object
from rlrun.errors import RLRunError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALGO_YAMLS = sorted(p.stem for p in (CONFIGS / "algo").glob("*.yaml"))


def test_every_registered_algorithm_has_a_yaml_and_every_yaml_an_algorithm():
    assert ALGO_YAMLS == ALGOS


@pytest.mark.parametrize("schema", [Config, EnvConfig, PolicyConfig, *(ALGORITHMS[name].config_class for name in ALGOS)], ids=lambda schema: schema.__name__)
def test_the_schemas_hold_no_defaults(schema):
    """Every value comes from the yaml files: a default in code would be a second source."""
    with_defaults = [f.name for f in fields(schema) if f.default != MISSING or f.default_factory is not NO_DEFAULT]
    assert not with_defaults, f"{schema.__name__} has defaults for {with_defaults}"


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_yaml_sets_exactly_its_schemas_keys(algo):
    """Composing configs/algo/<algo>.yaml leaves no value missing, and sets no key its schema lacks."""
    composed = compose_config(f"algo={algo}").algo
    schema = ALGORITHMS[algo].config_class
    assert OmegaConf.get_type(composed) is schema
    assert set(composed) == {f.name for f in fields(schema)}
    assert not [key for key in composed if OmegaConf.is_missing(composed, key)]
    own = OmegaConf.load(CONFIGS / "algo" / f"{algo}.yaml")  # the yaml itself, not a preset
    assert set(own) - {"defaults"} == {f.name for f in fields(schema)}


def test_the_generic_env_needs_an_id():
    with pytest.raises(RLRunError, match="no value for env.id"):
        to_object(compose_config("env=generic"))


def test_overrides_reach_the_objects():
    config = to_object(compose_config("algo.lr=3e-4", "env.num_envs=16", "seed=7"))
    assert (config.algo.lr, config.env.num_envs, config.seed) == (3e-4, 16, 7)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.lr=0", "algo.lr must be > 0"),
        ("algo.gamma=0", "algo.gamma must be in (0, 1]"),
        ("algo.gamma=1.5", "algo.gamma must be in (0, 1]"),
        ("algo.gae_lambda=1.1", "algo.gae_lambda must be in [0, 1]"),
        ("algo.clip_eps=-0.1", "algo.clip_eps must be > 0"),
        ("algo.epochs=0", "algo.epochs must be >= 1"),
        ("algo.target_kl=0", "algo.target_kl must be > 0 or null"),
        ("env.num_envs=0", "env.num_envs must be >= 1"),
        ("env.vectorization=threads", "env.vectorization must be one of"),
        ("policy.activation=gelu", "policy.activation must be tanh or relu"),
        ("total_timesteps=100", "less than one rollout"),
        ("total_timesteps=-5", "total_timesteps must be >= 1"),
        ("algo.num_minibatches=5000", "exceeds the batch size"),
        ("eval_episodes=-1", "eval_episodes must be >= 0"),
    ],
)
def test_out_of_range_values_are_refused(override, message):
    with pytest.raises(RLRunError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        to_object(compose_config(override))


@pytest.mark.parametrize("env_config", sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml") if p.stem != "generic"))
def test_every_shipped_env_says_when_it_is_solved(env_config):
    assert isinstance(to_object(compose_config(f"env={env_config}")).env.solved_return, float)


def test_target_return_solved_stops_at_each_envs_own_solved_return():
    (solved,) = launch.solved_targets(["target_return=solved"])
    assert [to_object(compose_config(f"env={env}", solved)).target_return for env in ("CartPole-v1", "Pendulum-v1")] == [475, -200]
    assert to_object(compose_config("env=CartPole-v1", solved, "env.solved_return=300")).target_return == 300
    assert launch.solved_targets(["target_return=solved,400", "seed=1"]) == ["target_return=${rlrun.solved_return:},400", "seed=1"]
    assert to_object(compose_config("env=generic", "env.id=MountainCar-v0", solved)).target_return == -110  # Gymnasium's
    with pytest.raises(RLRunError, match=r"neither the config of Pendulum-v1 nor Gymnasium sets one; give a number instead") as refusal:
        to_object(compose_config("env=generic", "env.id=Pendulum-v1", solved))
    assert "\n" not in str(refusal.value)  # one paragraph, without OmegaConf's key and type lines
