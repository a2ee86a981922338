"""Gymnasium vector environments, built from an `EnvConfig`."""

from __future__ import annotations

import difflib

import gymnasium as gym
from gymnasium.vector import VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from rlrun.config import EnvConfig
from rlrun.errors import RLRunError


def make_vector_env(config: EnvConfig, num_envs: int | None = None) -> VectorEnv:
    """`num_envs` copies of `config.id` (default `config.num_envs`) with episode statistics.

    Every Gymnasium vector env autoresets in NEXT_STEP mode here (the default, and the only
    mode the numpy-vectorised CartPole has); the trainer relies on it.
    """
    _check_registered(config.id)
    try:
        envs = gym.make_vec(
            config.id,
            num_envs=num_envs or config.num_envs,
            vectorization_mode=config.vectorization,
        )
    except gym.error.DependencyNotInstalled as err:
        raise RLRunError(f"Environment {config.id} needs an optional dependency: {err}") from None
    return RecordEpisodeStatistics(envs)


def _check_registered(env_id: str) -> None:
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, gym.registry.keys(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise RLRunError(
        f"Unknown Gymnasium environment {env_id!r}.{hint} Environments with a tuned config "
        "are listed by `rlrun train --help` (group env)."
    )


def max_episode_steps(config: EnvConfig) -> int:
    """The time limit of `config.id`; algorithms that need whole episodes need one."""
    limit = gym.spec(config.id).max_episode_steps
    if limit is None:
        raise RLRunError(
            f"Environment {config.id} has no time limit, but this algorithm collects whole "
            "episodes and needs every episode to end."
        )
    return limit
