"""Gymnasium vector environments, built from an `EnvConfig`."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.vector import VectorEnv
from gymnasium.wrappers import RecordVideo
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from rlrun.config import EnvConfig
from rlrun.errors import RLRunError


def make_vector_env(config: EnvConfig, num_envs: int | None = None, video_dir: Path | None = None) -> VectorEnv:
    """`num_envs` copies of `config.id` (default `config.num_envs`) with episode statistics.

    Every Gymnasium vector env autoresets in NEXT_STEP mode here (the default, and the only
    mode the numpy-vectorised CartPole has); the trainer relies on it. With `video_dir`,
    sync copies that render and record every episode to MP4 there.
    """
    _check_registered(config.id)
    options: dict[str, Any] = {"vectorization_mode": config.vectorization}
    if video_dir is not None:
        options = {
            "vectorization_mode": "sync",
            "render_mode": "rgb_array",
            "wrappers": [lambda env: RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, disable_logger=True)],
        }
    with optional_dependencies(config.id, video=video_dir is not None):
        envs = gym.make_vec(config.id, num_envs=num_envs or config.num_envs, **options)
    return RecordEpisodeStatistics(envs)


@contextmanager
def optional_dependencies(env_id: str, video: bool = False) -> Iterator[None]:
    """Turn Gymnasium's missing-dependency errors (at make, reset or render) into user errors."""
    try:
        yield
    except gym.error.DependencyNotInstalled as err:
        fix = "`pip install 'rlrun[video]'` installs what recording needs. " if video else ""
        raise RLRunError(f"{env_id} needs an optional dependency that is not installed. {fix}Gymnasium says: {err}") from None


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
