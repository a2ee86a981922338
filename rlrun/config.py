"""Structured configs: the schema behind every yaml file in `configs/`.

Hydra validates types against these dataclasses while it composes the config (so
`algo.lr=abc` fails before anything runs); `__post_init__` checks ranges when the trainer turns
the composed config into objects with `to_object`. Every field here is read by the code, and
every key in a yaml file must be a field here.

This module must not import torch: the CLI imports it to register the schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlrun.errors import RLRunError


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RLRunError(f"Invalid configuration: {message}")


def _bound(name: str, value: Any, op: str, limit: float, nullable: bool = False) -> None:
    """`name` must be `op limit` (">" or ">="), or null where `nullable`."""
    if nullable and value is None:
        return
    ok = value > limit if op == ">" else value >= limit
    _check(ok, f"{name} must be {op} {limit}{' or null' if nullable else ''}, got {value}.")


def _unit_interval(name: str, value: Any, open_at_zero: bool, nullable: bool = False) -> None:
    """`name` must lie in (0, 1] or [0, 1], or be null where `nullable`."""
    if nullable and value is None:
        return
    ok = (0 < value if open_at_zero else 0 <= value) and value <= 1
    interval = "(0, 1]" if open_at_zero else "[0, 1]"
    _check(ok, f"{name} must be in {interval}{' or null' if nullable else ''}, got {value}.")


@dataclass
class EnvConfig:
    """A Gymnasium environment, stepped as a vector of `num_envs` copies."""

    id: str = "${hydra:runtime.choices.env}"  # a yaml in configs/env/ is named after its id
    num_envs: int = 8
    # gymnasium.make_vec's vectorization_mode; null uses the env's own numpy-vectorised
    # implementation when it has one (CartPole does) and "sync" otherwise.
    vectorization: Optional[str] = None
    # Gymnasium's running-statistics wrappers; their statistics are saved with checkpoints.
    normalize_obs: bool = False
    normalize_reward: bool = False  # scale rewards by the std of the discounted return

    def __post_init__(self) -> None:
        _bound("env.num_envs", self.num_envs, ">=", 1)
        modes = (None, "sync", "async", "vector_entry_point")
        _check(
            self.vectorization in modes,
            f"env.vectorization must be one of null, sync, async, vector_entry_point; "
            f"got {self.vectorization!r}.",
        )


@dataclass
class PolicyConfig:
    """MLP actor and critic (separate networks, same shape)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    log_std_init: float = 0.0  # continuous actions: initial log sigma of the Gaussian

    def __post_init__(self) -> None:
        _check(
            all(size >= 1 for size in self.hidden_sizes),
            f"policy.hidden_sizes must be positive, got {list(self.hidden_sizes)}.",
        )
        _check(
            self.activation in ("tanh", "relu"),
            f"policy.activation must be tanh or relu, got {self.activation!r}.",
        )


@dataclass
class OptimConfig:
    """What every algorithm's gradient step reads."""

    lr: float = 3e-4
    anneal_lr: bool = False  # linear decay to 0 over the run
    max_grad_norm: Optional[float] = 0.5  # clip the global gradient norm; null: never

    def __post_init__(self) -> None:
        _bound("algo.lr", self.lr, ">", 0)
        _bound("algo.max_grad_norm", self.max_grad_norm, ">", 0, nullable=True)


@dataclass
class PGConfig(OptimConfig):
    """Vanilla policy gradient (REINFORCE), tutorial eq. 12: whole episodes, no critic."""

    normalize_advantages: bool = False


class Baseline(str, Enum):
    """What pg_baseline subtracts from the return (the b of the list after eq. 13)."""

    none = "none"
    mean = "mean"  # the mean return of the batch's other episodes
    value = "value"  # a learned V(s_t), regressed on the returns


@dataclass
class PGBaselineConfig(PGConfig):
    """Policy gradient with the improvements listed after the tutorial's eq. 13."""

    reward_to_go: bool = True  # weight a_t by rewards from t on, not the whole episode's
    gamma: float = 0.99  # discount gamma^(t'-t)
    baseline: Baseline = Baseline.value
    gae_lambda: Optional[float] = None  # GAE(lambda) with the learned V instead of Monte Carlo
    value_steps: int = 5  # critic regression steps per update (baseline=value)
    vf_coef: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _unit_interval("algo.gamma", self.gamma, open_at_zero=True)
        _bound("algo.value_steps", self.value_steps, ">=", 1)
        _bound("algo.vf_coef", self.vf_coef, ">", 0)
        _unit_interval("algo.gae_lambda", self.gae_lambda, open_at_zero=False, nullable=True)
        if self.gae_lambda is not None:
            _check(
                self.baseline == Baseline.value,
                "algo.gae_lambda needs the learned value baseline (algo.baseline=value); "
                f"got algo.baseline={self.baseline.value}.",
            )


@dataclass
class PPOConfig(OptimConfig):
    """Shared by both PPO variants: fixed-length rollouts, GAE, minibatch epochs."""

    rollout_steps: int = 128
    epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    normalize_advantages: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _bound("algo.rollout_steps", self.rollout_steps, ">=", 1)
        _bound("algo.epochs", self.epochs, ">=", 1)
        _bound("algo.num_minibatches", self.num_minibatches, ">=", 1)
        _unit_interval("algo.gamma", self.gamma, open_at_zero=True)
        _unit_interval("algo.gae_lambda", self.gae_lambda, open_at_zero=False)
        _bound("algo.ent_coef", self.ent_coef, ">=", 0)
        _bound("algo.vf_coef", self.vf_coef, ">=", 0)


@dataclass
class PPOClipConfig(PPOConfig):
    """PPO-clip, tutorial eq. 19."""

    clip_eps: float = 0.2
    # Stop the epochs of an update early once approx_kl exceeds this (null: never).
    target_kl: Optional[float] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _bound("algo.clip_eps", self.clip_eps, ">", 0)
        _bound("algo.target_kl", self.target_kl, ">", 0, nullable=True)


@dataclass
class PPOKLConfig(PPOConfig):
    """PPO with a KL penalty, tutorial eq. 18, and Schulman et al. (2017)'s adaptive beta."""

    kl_target: float = 0.01  # d_targ
    beta_init: float = 1.0
    adaptive: bool = True  # false: beta stays beta_init

    def __post_init__(self) -> None:
        super().__post_init__()
        _bound("algo.kl_target", self.kl_target, ">", 0)
        _bound("algo.beta_init", self.beta_init, ">=", 0)
        _check(
            not (self.adaptive and self.beta_init == 0),
            "algo.beta_init=0 with algo.adaptive=true would stay 0 (beta only halves or doubles); "
            "give a positive beta_init or set algo.adaptive=false.",
        )


ALGO_CONFIGS: dict[str, type] = {
    "pg": PGConfig,
    "pg_baseline": PGBaselineConfig,
    "ppo_kl": PPOKLConfig,
    "ppo_clip": PPOClipConfig,
}


@dataclass
class Config:
    """The whole run: `configs/config.yaml` plus one `algo/` and one `env/` file."""

    algo: Any = MISSING
    env: EnvConfig = MISSING
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    seed: int = 1
    total_timesteps: int = 100_000
    eval_episodes: int = 10  # deterministic episodes per evaluation
    eval_interval: int = 0  # env steps between evaluations during training; 0: only at the end
    checkpoint_interval: int = 50  # updates between checkpoints; 0: only at the end
    # Stop early once the mean return of the last 20 training episodes reaches this.
    target_return: Optional[float] = None
    torch_threads: int = 1  # small MLPs run fastest on one thread
    resume: Optional[str] = None  # a run directory to continue (set by `rlrun train resume=DIR`)

    def __post_init__(self) -> None:
        _bound("seed", self.seed, ">=", 0)
        _bound("total_timesteps", self.total_timesteps, ">=", 1)
        _bound("eval_episodes", self.eval_episodes, ">=", 0)
        _bound("eval_interval", self.eval_interval, ">=", 0)
        _bound("checkpoint_interval", self.checkpoint_interval, ">=", 0)
        _bound("torch_threads", self.torch_threads, ">=", 1)
        if isinstance(self.algo, PGBaselineConfig) and self.algo.baseline == Baseline.mean:
            _check(
                self.env.num_envs >= 2,
                "algo.baseline=mean estimates each episode's baseline from the other episodes "
                f"of the batch (one per env), so it needs env.num_envs >= 2; got {self.env.num_envs}.",
            )
        if isinstance(self.algo, PPOConfig):
            batch_size = self.algo.rollout_steps * self.env.num_envs
            _check(
                self.total_timesteps >= batch_size,
                f"total_timesteps ({self.total_timesteps}) is less than one rollout "
                f"(algo.rollout_steps * env.num_envs = {batch_size}).",
            )
            _check(
                self.algo.num_minibatches <= batch_size,
                f"algo.num_minibatches ({self.algo.num_minibatches}) exceeds the batch size "
                f"(algo.rollout_steps * env.num_envs = {batch_size}).",
            )


def register_schemas() -> None:
    """Make the dataclasses available to the yaml files' defaults lists."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    store.store(group="schema/env", name="env", node=EnvConfig)
    for name, schema in ALGO_CONFIGS.items():
        store.store(group="schema/algo", name=name, node=schema)


def to_object(cfg: DictConfig) -> Config:
    """The composed config as validated dataclass instances."""
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise RLRunError(f"Invalid configuration: {err}") from None
    assert isinstance(config, Config)
    return config


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algo": {"lr": 1e-3}} -> {"algo.lr": 1e-3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
