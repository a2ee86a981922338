"""Structured configs: the schema behind every yaml file in `configs/`.

Hydra validates types against these dataclasses while it composes the config (so
`algo.lr=abc` fails before anything runs); `__post_init__` checks ranges when the trainer turns
the composed config into objects with `to_object`. Every field here is read by the code, and
every key in a yaml file must be a field here. The dataclasses hold types and ranges only:
every value comes from the yaml files (a field with a default in code would be a second
source of defaults), so a key the yaml files leave unset is an error, not a silent fallback.
Each algorithm's config class lives beside the algorithm, in `rlrun/algos/`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Optional, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlrun.errors import RLRunError


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RLRunError(f"Invalid configuration: {message}")


def bound(name: str, value: Any, op: str, limit: float, nullable: bool = False) -> None:
    """`name` must be `op limit` (">" or ">="), or null where `nullable`."""
    if nullable and value is None:
        return
    ok = math.isfinite(value) and (value > limit if op == ">" else value >= limit)
    check(ok, f"{name} must be {op} {limit}{' or null' if nullable else ''}, got {value}.")


def check_one_rollout(rollout_steps: int, num_envs: int, total_timesteps: int) -> None:
    check(
        rollout_steps * num_envs <= MAX_ROLLOUT_STEPS,
        f"one rollout of algo.rollout_steps * env.num_envs = {rollout_steps * num_envs:,} steps is more "
        f"than rlrun stores ({MAX_ROLLOUT_STEPS:,}).",
    )
    check(
        total_timesteps >= rollout_steps * num_envs,
        f"total_timesteps ({total_timesteps}) is less than one rollout "
        f"(algo.rollout_steps * env.num_envs = {rollout_steps * num_envs}).",
    )


def unit_interval(name: str, value: Any, open_at_zero: bool, nullable: bool = False) -> None:
    """`name` must lie in (0, 1] or [0, 1], or be null where `nullable`."""
    if nullable and value is None:
        return
    ok = (0 < value if open_at_zero else 0 <= value) and value <= 1  # False for NaN
    interval = "(0, 1]" if open_at_zero else "[0, 1]"
    check(ok, f"{name} must be in {interval}{' or null' if nullable else ''}, got {value}.")


MAX_ENVS = 4096  # copies of an environment in one process
MAX_EVAL_EPISODES = 10_000
MAX_SEED = 2**31 - 1  # evaluation and resumed episodes seed from seed + an offset
MAX_WEIGHTS = 50_000_000  # per network: 200 MB of float32 weights, far beyond any MLP policy
MAX_ROLLOUT_STEPS = 10_000_000  # env steps stored per rollout (steps x envs)


@dataclass
class EnvConfig:
    """A Gymnasium environment, stepped as a vector of `num_envs` copies."""

    id: str = MISSING
    num_envs: int = MISSING
    # gymnasium.make_vec's vectorization_mode; null uses the env's own numpy-vectorised
    # implementation when it has one (CartPole does) and "sync" otherwise. "envpool":
    # EnvPool's C++ implementation of the same id, its envs stepped in threads (`pip install
    # 'rlrun[envpool]'`; evaluation stays on Gymnasium's). Worth it from a few envs up: on
    # Hopper-v5 with 2 cores, 8 envs cost about 110 µs per env step against 220 for sync, but
    # 1 env about 290 µs, no gain over sync.
    vectorization: Optional[str] = MISSING
    # Running mean/std normalisation, Gymnasium's arithmetic (rlrun.envs.Normalizers); the
    # statistics are saved with checkpoints.
    normalize_obs: bool = MISSING
    normalize_reward: bool = MISSING  # scale rewards by the std of the discounted return
    # The evaluation return at which the env counts as solved (README, "Algorithms and
    # environments"): what `target_return=solved` stops at and what `rlrun summary` counts;
    # null: Gymnasium's reward threshold for the id, if it has one (solved_return below).
    solved_return: Optional[float] = MISSING

    def __post_init__(self) -> None:
        bound("env.num_envs", self.num_envs, ">=", 1)
        check(self.num_envs <= MAX_ENVS, f"env.num_envs must be at most {MAX_ENVS}, got {self.num_envs}.")
        modes = (None, "sync", "async", "vector_entry_point", "envpool")
        check(
            self.vectorization in modes,
            f"env.vectorization must be one of null, sync, async, vector_entry_point, envpool; "
            f"got {self.vectorization!r}.",
        )


@dataclass
class PolicyConfig:
    """MLP actor and critic (separate networks, same shape)."""

    hidden_sizes: list[int] = MISSING
    activation: str = MISSING
    log_std_init: float = MISSING  # continuous actions: initial log sigma of the Gaussian

    def __post_init__(self) -> None:
        check(
            all(size >= 1 for size in self.hidden_sizes),
            f"policy.hidden_sizes must be positive, got {list(self.hidden_sizes)}.",
        )
        weights = sum(a * b for a, b in zip(self.hidden_sizes[:-1], self.hidden_sizes[1:]))
        check(
            weights <= MAX_WEIGHTS,
            f"policy.hidden_sizes {list(self.hidden_sizes)} would need {weights:,} weights per network "
            f"({weights * 4 / 1e9:.1f} GB each for actor and critic); rlrun allows up to {MAX_WEIGHTS:,}.",
        )
        check(
            self.activation in ("tanh", "relu"),
            f"policy.activation must be tanh or relu, got {self.activation!r}.",
        )


@dataclass
class OptimConfig:
    """What every algorithm's gradient step reads; each algorithm's config extends it."""

    lr: float = MISSING
    anneal_lr: bool = MISSING  # linear decay to 0 over the run
    max_grad_norm: Optional[float] = MISSING  # clip the global gradient norm; null: never

    def __post_init__(self) -> None:
        bound("algo.lr", self.lr, ">", 0)
        bound("algo.max_grad_norm", self.max_grad_norm, ">", 0, nullable=True)

    def check_run(self, num_envs: int, total_timesteps: int) -> None:
        """Checks of this algorithm's keys against the rest of the run's config."""




@dataclass
class Config:
    """The whole run: `configs/config.yaml` plus one `algo/` and one `env/` file."""

    algo: Any = MISSING  # one of the algorithms' config classes (rlrun.algos)
    env: EnvConfig = MISSING
    policy: PolicyConfig = MISSING
    seed: int = MISSING
    total_timesteps: int = MISSING
    eval_episodes: int = MISSING  # deterministic episodes per evaluation
    eval_interval: int = MISSING  # env steps between evaluations during training; 0: only at the end
    checkpoint_interval: int = MISSING  # updates between checkpoints; 0: only at the end
    # Stop early once the mean return of the last 20 training episodes reaches this.
    target_return: Optional[float] = MISSING
    torch_threads: int = MISSING  # small MLPs run fastest on one thread
    # torch.compile the update: true, false, or null to decide by the run's length (rlrun/compiling.py)
    torch_compile: Optional[bool] = MISSING
    resume: Optional[str] = MISSING  # a run directory to continue (set by `rlrun train resume=DIR`)

    def __post_init__(self) -> None:
        bound("seed", self.seed, ">=", 0)
        check(self.seed <= MAX_SEED, f"seed must be at most {MAX_SEED} (2^31 - 1), got {self.seed}.")
        bound("total_timesteps", self.total_timesteps, ">=", 1)
        bound("eval_episodes", self.eval_episodes, ">=", 0)
        check(self.eval_episodes <= MAX_EVAL_EPISODES, f"eval_episodes must be at most {MAX_EVAL_EPISODES}, got {self.eval_episodes}.")
        bound("eval_interval", self.eval_interval, ">=", 0)
        bound("checkpoint_interval", self.checkpoint_interval, ">=", 0)
        bound("torch_threads", self.torch_threads, ">=", 1)
        cores = os.cpu_count() or 1
        check(self.torch_threads <= cores, f"torch_threads must be at most the {cores} cores of this machine, got {self.torch_threads}.")
        self.algo.check_run(self.env.num_envs, self.total_timesteps)


def solved_return(env_id: str, configured: float | None) -> float | None:
    """When `env_id` counts as solved: `configured` (its config's env.solved_return), else
    Gymnasium's reward threshold for the id; None if neither has one."""
    if configured is not None:
        return configured
    import gymnasium as gym

    return gym.spec(env_id).reward_threshold if env_id in gym.registry else None


def _solved_target(*, _root_: DictConfig) -> float:
    """The value of `target_return=solved` (rlrun.launch.solved_targets)."""
    value = solved_return(_root_.env.id, _root_.env.solved_return)
    if value is None:
        raise RLRunError(
            f"target_return=solved stops at env.solved_return, and neither the config of {_root_.env.id} nor "
            "Gymnasium sets one; give a number instead (target_return=R) or set one (env.solved_return=R)."
        )
    return value


OmegaConf.register_new_resolver("rlrun.solved_return", _solved_target)


ALGO_CONFIGS: dict[str, type] = {}  # algo= choice -> its config class, set by register_schemas


def register_schemas(algo_configs: dict[str, type]) -> None:
    """Make the dataclasses available to the yaml files' defaults lists."""
    ALGO_CONFIGS.update(algo_configs)
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    store.store(group="schema/env", name="env", node=EnvConfig)
    for name, schema in algo_configs.items():
        store.store(group="schema/algo", name=name, node=schema)


def to_object(cfg: DictConfig) -> Config:
    """The composed config as validated dataclass instances."""
    algo_config = OmegaConf.get_type(cfg, "algo")
    values = flatten(OmegaConf.to_container(cfg))  # a value never set reads "???"
    for key in values:
        if not key.startswith("hydra."):
            check_known_key(key, algo_config)
    missing = [key for key in _known_keys(algo_config) if values.get(key, MISSING) == MISSING]
    check(
        not missing,
        f"no value for {', '.join(missing)}: the yaml files set every key, so a `~` override "
        "removed it or a config file lacks it; give it a value (key=value) instead.",
    )
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        cause = _raised_by_resolver(err)
        if cause is not None:
            raise cause from None
        raise RLRunError(f"Invalid configuration: {err}") from None
    assert isinstance(config, Config)
    return config


def _raised_by_resolver(err: BaseException) -> RLRunError | None:
    """The RLRunError one of rlrun's resolvers raised, which OmegaConf wraps in its own."""
    while err is not None and not isinstance(err, RLRunError):
        err = err.__cause__ or err.__context__
    return err


def _fields(schema: type, prefix: str = "") -> list[str]:
    return [f"{prefix}{f.name}" for f in fields(schema)]


def _known_keys(algo_config: type) -> list[str]:
    top = [name for name in _fields(Config) if name not in ("algo", "env", "policy")]
    return top + _fields(algo_config, "algo.") + _fields(EnvConfig, "env.") + _fields(PolicyConfig, "policy.")


def check_value(key: str, value: Any, algo_config: type) -> None:
    """Refuse what OmegaConf would quietly convert: a bool key takes true or false only (not 2)."""
    section, _, name = key.rpartition(".")
    schema = {"": Config, "algo": algo_config, "env": EnvConfig, "policy": PolicyConfig}.get(section)
    if schema is not None and get_type_hints(schema).get(name) is bool:
        check(isinstance(value, bool), f"{key} is true or false, got {value!r}.")


def check_known_key(key: str, algo_config: type, algo_configs: dict[str, type] | None = None) -> None:
    """Refuse a key that the run's schema (`algo_config` for `algo.*`) does not have, naming
    the closest known keys and the algorithms (of `algo_configs`, default: the registered
    ones) that do have it."""
    algo_configs = ALGO_CONFIGS if algo_configs is None else algo_configs
    known = _known_keys(algo_config)
    if key in known or not is_dataclass(algo_config):
        return
    import difflib

    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    leaf = key.rpartition(".")[2]
    owners = [name for name, schema in algo_configs.items() if leaf in _fields(schema)]
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    if key.startswith("algo.") and owners:
        hint += f" `{leaf}` is a key of {', '.join(f'algo={name}' for name in owners)}."
    algo = next((name for name, schema in algo_configs.items() if schema is algo_config), algo_config.__name__)
    raise RLRunError(
        f"Unknown configuration key {key!r}: the config of algo={algo} has no such key, and rlrun "
        f"never reads a key its schema lacks (a `+` prefix does not change that).{hint} "
        "`rlrun train --help` lists every key."
    )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algo": {"lr": 1e-3}} -> {"algo.lr": 1e-3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
