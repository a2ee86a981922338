"""Gymnasium vector environments, built from an `EnvConfig`."""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv
from gymnasium.wrappers import RecordVideo
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward, RecordEpisodeStatistics

from rlrun.config import EnvConfig
from rlrun.errors import RLRunError

# Families of Gymnasium environments that need an extra, by their entry point's package.
EXTRAS = {"gymnasium.envs.box2d": "box2d", "gymnasium.envs.mujoco": "mujoco"}
# Environments whose whole state pickles faithfully (pure Python and numpy); others, such as
# MuJoCo's (C state that pickles without error but not faithfully), restart episodes on resume.
EXACTLY_RESTORABLE = ("gymnasium.envs.classic_control",)


def make_vector_env(config: EnvConfig, num_envs: int | None = None, video_dir: Path | None = None, obs_stats: RunningMeanStd | None = None) -> VectorEnv:
    """`num_envs` copies of `config.id` (default `config.num_envs`) with episode statistics
    of the raw rewards and, when configured, observation normalisation.

    Every Gymnasium vector env autoresets in NEXT_STEP mode here (the default, and the only
    mode the numpy-vectorised CartPole has); the trainer relies on it. With `video_dir`,
    sync copies that render and record every episode to MP4 there. With `obs_stats`, the
    observation normaliser uses those statistics, frozen (for evaluation).
    """
    _check_registered(config.id)
    options: dict[str, Any] = {"vectorization_mode": config.vectorization}
    if video_dir is not None:
        options = {
            "vectorization_mode": "sync",
            "render_mode": "rgb_array",
            "wrappers": [lambda env: RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, disable_logger=True)],
        }
    subprocesses = options["vectorization_mode"] == "async"
    if subprocesses:
        options["vector_kwargs"] = {"context": "fork"}  # workers inherit the signal mask
    with optional_dependencies(config.id, video=video_dir is not None), _workers_ignore_sigint(subprocesses):
        envs = RecordEpisodeStatistics(gym.make_vec(config.id, num_envs=num_envs or config.num_envs, **options))
    if config.normalize_obs:
        envs = NormalizeObservation(envs)
        if obs_stats is not None:
            envs.obs_rms, envs.update_running_mean = obs_stats, False
    return envs


@contextmanager
def _workers_ignore_sigint(active: bool) -> Iterator[None]:
    """Subprocess workers forked here inherit a blocked SIGINT: the terminal's Ctrl-C, sent to
    the whole process group, must not kill the environments under the trainer's graceful
    stop. The trainer itself gets a Ctrl-C from this window once it is unblocked."""
    if not active:
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def normalize_rewards(envs: VectorEnv, gamma: float) -> VectorEnv:
    """Scale rewards by the running std of the discounted return (training only)."""
    return NormalizeReward(envs, gamma=gamma)


# The normalisation wrappers' running statistics: wrapper -> (name in checkpoints, attribute).
_NORMALIZERS = {NormalizeObservation: ("obs", "obs_rms"), NormalizeReward: ("return", "return_rms")}


def _normalizers(envs: VectorEnv) -> Iterator[tuple[str, VectorEnv, str]]:
    while isinstance(envs, gym.vector.VectorWrapper):
        if type(envs) in _NORMALIZERS:
            name, attribute = _NORMALIZERS[type(envs)]
            yield name, envs, attribute
        envs = envs.env


def normalizer_stats(envs: VectorEnv) -> dict[str, RunningMeanStd]:
    """The running statistics of the normalisation wrappers in `envs`, by name."""
    return {name: getattr(wrapper, attribute) for name, wrapper, attribute in _normalizers(envs)}


def normalizer_state(envs: VectorEnv) -> dict[str, dict[str, Any]]:
    """The statistics as plain data (float64 values as Python floats: exact), for checkpoints."""
    return {
        name: {"mean": np.asarray(stats.mean).tolist(), "var": np.asarray(stats.var).tolist(), "count": float(stats.count)}
        for name, stats in normalizer_stats(envs).items()
    }


def running_stats(state: dict[str, Any]) -> RunningMeanStd:
    """A `normalizer_state` entry as Gymnasium's statistics object."""
    stats = RunningMeanStd(shape=np.shape(state["mean"]))
    stats.mean, stats.var, stats.count = np.array(state["mean"]), np.array(state["var"]), state["count"]
    return stats


def load_normalizer_state(envs: VectorEnv, state: dict[str, dict[str, Any]]) -> None:
    for name, wrapper, attribute in _normalizers(envs):
        if name in state:
            setattr(wrapper, attribute, running_stats(state[name]))


def snapshot(config: EnvConfig, envs: VectorEnv) -> bytes | None:
    """The environments mid-episode, pickled, when that restores them exactly."""
    if not _entry_module(config.id).startswith(EXACTLY_RESTORABLE) or config.vectorization == "async":
        return None
    return cloudpickle.dumps(envs)


@contextmanager
def optional_dependencies(env_id: str, video: bool = False) -> Iterator[None]:
    """Turn Gymnasium's missing-dependency errors (at make, reset or render) into user errors
    that name the rlrun extra to install."""
    try:
        yield
    except gym.error.DependencyNotInstalled as err:
        module = _entry_module(env_id)
        extras = [extra for prefix, extra in EXTRAS.items() if module.startswith(prefix)] + (["video"] if video else [])
        fix = f"Install it with: pip install 'rlrun[{','.join(extras)}]'. " if extras else ""
        raise RLRunError(f"{env_id} needs an optional dependency that is not installed. {fix}Gymnasium says: {err}") from None


def _entry_module(env_id: str) -> str:
    entry_point = gym.spec(env_id).entry_point
    return entry_point.split(":")[0] if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")


def max_episode_steps(config: EnvConfig) -> int:
    """The time limit of `config.id`; algorithms that need whole episodes need one."""
    limit = gym.spec(config.id).max_episode_steps
    if limit is None:
        raise RLRunError(
            f"Environment {config.id} has no time limit, but this algorithm collects whole "
            "episodes and needs every episode to end."
        )
    return limit


def _check_registered(env_id: str) -> None:
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, gym.registry.keys(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise RLRunError(
        f"Unknown Gymnasium environment {env_id!r}.{hint} Environments with a tuned config "
        "are listed by `rlrun train --help` (group env)."
    )
