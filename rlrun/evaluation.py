"""Deterministic evaluation: the policy's most likely action, fresh seeded episodes."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

from rlrun.checkpoint import load_checkpoint
from rlrun.config import EnvConfig, PolicyConfig
from rlrun.envs import make_vector_env, optional_dependencies, running_stats
from rlrun.errors import RLRunError
from rlrun.policies import ActorCritic

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never replay training seeds
UNLIMITED_EPISODE_STEPS = 100_000  # evaluation gives up on an episode this long without a time limit


def evaluate(
    policy: ActorCritic, env_config: EnvConfig, episodes: int, seed: int,
    video_dir: Path | None = None, obs_stats: RunningMeanStd | None = None,
) -> np.ndarray:
    """Returns of `episodes` complete episodes played with the mode of pi(.|s) (`policy`: a
    group of one run).

    Runs them in parallel, one per env; with `video_dir`, one after another in a single
    recorded env (Gymnasium's RecordVideo, one MP4 per episode). `obs_stats`: the training
    run's observation-normalisation statistics, used frozen.
    """
    num_envs = 1 if video_dir else episodes
    envs = make_vector_env(env_config, num_envs=num_envs, video_dir=video_dir, obs_stats=obs_stats)
    # env n plays quota[n] episodes; every episode counts, so no length bias
    quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
    finished = np.zeros(num_envs, dtype=int)
    running = np.zeros(num_envs)
    returns: list[float] = []
    with closing(envs), optional_dependencies(env_config.id, video=video_dir is not None):
        obs, _ = envs.reset(seed=seed)
        prev_dones = np.zeros(num_envs, dtype=bool)
        for _ in range(int(quota.max()) * (_episode_step_limit(env_config.id) + 1)):
            if (finished == quota).all():
                break
            with torch.inference_mode():
                dist_params = policy.actor(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
                actions = policy.distribution(dist_params).mode
            obs, rewards, terminated, truncated, _ = envs.step(policy.head.to_env(actions)[0])
            counting = (finished < quota) & ~prev_dones  # skip NEXT_STEP reset steps
            running += np.where(counting, rewards, 0.0)
            prev_dones = terminated | truncated
            for n in np.flatnonzero(prev_dones & counting):
                returns.append(running[n])
                running[n] = 0.0
                finished[n] += 1
        if (finished < quota).any():
            raise RLRunError(
                f"Evaluation episodes of {env_config.id} did not end within {_episode_step_limit(env_config.id):,} "
                "steps; the environment has no time limit that ends them."
            )
    return np.array(returns)


def _episode_step_limit(env_id: str) -> int:
    return gym.spec(env_id).max_episode_steps or UNLIMITED_EPISODE_STEPS


def evaluate_run(run_dir: Path, episodes: int, seed: int | None = None, video_dir: Path | None = None) -> np.ndarray:
    """Evaluate the newest checkpoint of `run_dir` with the configuration it was trained with.

    The default seed is the one the run's own final evaluation used, so the numbers agree.
    """
    if video_dir is not None:
        # Frames are drawn off screen: without this, SDL looks for a display and prints an
        # "XDG_RUNTIME_DIR is invalid" line that reads like rlrun's own error.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    state = load_checkpoint(run_dir)
    saved = state["config"]
    try:
        env_config, policy_config = EnvConfig(**saved["env"]), PolicyConfig(**saved["policy"])
    except (KeyError, TypeError) as err:
        raise RLRunError(f"The checkpoint of {run_dir} holds no usable configuration ({type(err).__name__}: {err}).") from None
    envs = make_vector_env(env_config, num_envs=1)
    try:
        with_critic = any(key.startswith("critic.") for key in state["policy"])
        policy = ActorCritic(envs.single_observation_space, envs.single_action_space, policy_config, with_critic, [torch.Generator()])
    finally:
        envs.close()
    try:
        policy.load_run_state_dict(0, state["policy"])
    except RuntimeError as err:
        raise RLRunError(f"The checkpoint of {run_dir} does not fit its own configuration: {err}") from None
    seed = saved["seed"] + EVAL_SEED_OFFSET if seed is None else seed
    obs_stats = state["collector"]["normalizers"].get("obs")
    return evaluate(policy, env_config, episodes, seed, video_dir, obs_stats=running_stats(obs_stats) if obs_stats else None)
