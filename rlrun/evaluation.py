"""Evaluation: fresh seeded episodes played with the policy's most likely action (deterministic,
the default) or with actions sampled from it (stochastic)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

from rlrun.checkpoint import load_checkpoint
from rlrun.config import EnvConfig, PolicyConfig
from rlrun.envs import make_vector_env, normalized, optional_dependencies, running_stats
from rlrun.errors import RLRunError
from rlrun.policies import Acting, ActorCritic

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never replay training seeds
UNLIMITED_EPISODE_STEPS = 100_000  # evaluation gives up on an episode this long without a time limit


def evaluate(
    policy: ActorCritic, env_config: EnvConfig, episodes: int, seeds: dict[int, int],
    obs_stats: dict[int, RunningMeanStd | None], video_dir: Path | None = None, stochastic: bool = False,
) -> dict[int, np.ndarray]:
    """Returns of `episodes` complete episodes played with the mode of pi(.|s) (with
    `stochastic`, actions sampled from pi(.|s), run r's draws from a generator seeded by
    `seeds[r]`, so they repeat and do not depend on the other runs), for each run r
    of `policy` in `seeds`: fresh episodes seeded by `seeds[r]`, observations normalised with
    run r's training statistics `obs_stats[r]` (frozen; None: not normalised). The runs play
    side by side, one batched forward pass per step for all of them.

    Each run plays its episodes in parallel, one per env; with `video_dir` (one run), one after
    another in a single recorded env (Gymnasium's RecordVideo, one MP4 per episode). The
    episodes are Gymnasium's implementation of the id even for a run trained on EnvPool's: the
    reference implementation, the same for every run whatever engine trained it, and the one
    RecordVideo records.
    """
    num_envs = 1 if video_dir else episodes
    runs = {run: _EvalRun(env_config, num_envs, episodes, video_dir, obs_stats[run]) for run in seeds}
    limit = _episode_step_limit(env_config.id)
    generators = [torch.Generator().manual_seed(seeds.get(run, 0)) for run in range(policy.num_runs)] if stochastic else []
    act, head = Acting(policy.actor), policy.head
    try:
        with optional_dependencies(env_config.id, video=video_dir is not None):
            obs = np.zeros((policy.num_runs, num_envs, *policy.obs_shape), dtype=np.float32)
            for run, evaluation in runs.items():
                obs[run] = evaluation.reset(seeds[run])
            for _ in range(-(-episodes // num_envs) * (limit + 1)):
                playing = [run for run, evaluation in runs.items() if not evaluation.done()]
                if not playing:
                    break
                noise = head.noise(generators, playing, (num_envs,)) if stochastic else None
                actions = head.to_env(head.sample(act(obs), noise))
                for run in playing:
                    obs[run] = runs[run].step(actions[run])
    finally:
        for evaluation in runs.values():
            evaluation.envs.close()
    if any(not evaluation.done() for evaluation in runs.values()):
        raise RLRunError(
            f"Evaluation episodes of {env_config.id} did not end within {limit:,} "
            "steps; the environment has no time limit that ends them."
        )
    return {run: np.array(evaluation.returns) for run, evaluation in runs.items()}


class _EvalRun:
    """One run's evaluation environments and its episode count: env n plays quota[n] episodes,
    and every episode counts, so there is no bias toward short ones."""

    def __init__(self, env_config: EnvConfig, num_envs: int, episodes: int, video_dir: Path | None, obs_stats: RunningMeanStd | None):
        self.envs = make_vector_env(_gymnasium(env_config), num_envs=num_envs, video_dir=video_dir)
        self.obs_stats = obs_stats
        self.quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
        self.finished = np.zeros(num_envs, dtype=int)
        self.running = np.zeros(num_envs)
        self.prev_dones = np.zeros(num_envs, dtype=bool)
        self.returns: list[float] = []

    def reset(self, seed: int) -> np.ndarray:
        return self.normalize(self.envs.reset(seed=seed)[0])

    def done(self) -> bool:
        return bool((self.finished == self.quota).all())

    def step(self, actions: np.ndarray) -> np.ndarray:
        obs, rewards, terminated, truncated, _ = self.envs.step(actions)
        counting = (self.finished < self.quota) & ~self.prev_dones  # skip NEXT_STEP reset steps
        self.running += np.where(counting, rewards, 0.0)
        self.prev_dones = terminated | truncated
        for n in np.flatnonzero(self.prev_dones & counting):
            self.returns.append(self.running[n])
            self.running[n] = 0.0
            self.finished[n] += 1
        return self.normalize(obs)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """As NormalizeObservation with the training statistics, frozen."""
        return obs if self.obs_stats is None else normalized(obs, self.obs_stats.mean, self.obs_stats.var)


def _gymnasium(env_config: EnvConfig) -> EnvConfig:
    """The config with Gymnasium's own vectorization in place of EnvPool."""
    return replace(env_config, vectorization=None) if env_config.vectorization == "envpool" else env_config


def _episode_step_limit(env_id: str) -> int:
    return gym.spec(env_id).max_episode_steps or UNLIMITED_EPISODE_STEPS


def evaluate_run(run_dir: Path, episodes: int, seed: int | None = None, video_dir: Path | None = None, stochastic: bool = False) -> np.ndarray:
    """Evaluate the newest checkpoint of `run_dir` with the configuration it was trained with,
    deterministically or (`stochastic`) with sampled actions.

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
    envs = make_vector_env(_gymnasium(env_config), num_envs=1)
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
    return evaluate(policy, env_config, episodes, {0: seed}, {0: running_stats(obs_stats) if obs_stats else None}, video_dir, stochastic)[0]
