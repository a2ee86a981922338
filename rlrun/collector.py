"""The environments and where they are: acting with the policy to fill a `Rollout`."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlrun.config import EnvConfig
from rlrun.envs import load_normalizer_state, make_vector_env, normalize_rewards, normalizer_state, snapshot
from rlrun.policies import ActorCritic
from rlrun.rollout import Rollout


@dataclass
class Episodes:
    """What one collection produced besides the rollout itself."""

    steps: int = 0  # real transitions (reset steps do not count)
    returns: list[float] = field(default_factory=list)  # of the episodes that finished, raw rewards
    lengths: list[float] = field(default_factory=list)


class Collector:
    """`num_envs` Gymnasium environments as one vector env, their current observation, which
    of them just ended an episode (their next step is an autoreset, not a transition) and,
    for whole-episode rollouts, which still collect.

    Fixed rollouts: `rollout.steps` steps of every env, episodes carried over between
    updates. Whole episodes: every env runs exactly one episode per collection, so every
    return is complete.
    """

    def __init__(self, config: EnvConfig, discount: float, whole_episodes: bool, seed: int):
        self.config = config
        self.whole_episodes = whole_episodes
        self.envs = make_vector_env(config)
        if config.normalize_reward:
            self.envs = normalize_rewards(self.envs, gamma=discount)
        self.start_episodes(seed)

    def start_episodes(self, seed: int | None = None) -> None:
        obs, _ = self.envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.prev_dones = np.zeros(self.envs.num_envs, dtype=bool)
        # In whole-episode mode an env stops contributing after its first episode ends.
        self.collecting = np.ones(self.envs.num_envs, dtype=bool)

    def collect(self, policy: ActorCritic, rollout: Rollout) -> Episodes:
        """Fill `rollout` by acting with `policy`."""
        whole_episodes = self.whole_episodes
        if whole_episodes and not self.collecting.all():  # the last batch used them up
            self.start_episodes()
        # What the environments return is written through numpy views of the rollout's
        # tensors: numpy's per-call cost is a fraction of torch's on arrays this small.
        rewards_view, terminated_view, dones_view, valid_view = (
            x.numpy() for x in (rollout.rewards, rollout.terminated, rollout.dones, rollout.valid)
        )
        episodes = Episodes()
        with torch.inference_mode():
            for t in range(rollout.steps):
                dist_params = policy.actor(self.obs)
                actions = policy.head.sample(dist_params)
                obs, rewards, terminated, truncated, info = self.envs.step(policy.head.to_env(actions))
                rollout.obs[t] = self.obs
                rollout.actions[t] = actions
                rollout.dist_params[t] = dist_params
                rewards_view[t], terminated_view[t] = rewards, terminated
                dones_view[t] = dones = terminated | truncated
                valid_view[t] = valid = ~self.prev_dones & self.collecting
                self.prev_dones = dones
                self.obs = torch.as_tensor(obs, dtype=torch.float32)
                if "episode" in info:
                    finished = info["_episode"] & valid
                    episodes.returns += info["episode"]["r"][finished].tolist()
                    episodes.lengths += info["episode"]["l"][finished].tolist()
                if whole_episodes:
                    self.collecting &= ~dones
                    if not self.collecting.any():
                        valid_view[t + 1:] = False
                        break
            # Neither the critic nor log pi(a|s) plays a part in acting: one batched call each
            # over the steps taken (a whole-episode rollout may end early).
            filled = t + 1
            rollout.log_probs[:filled] = policy.distribution(rollout.dist_params[:filled]).log_prob(rollout.actions[:filled])
            rollout.values[:filled] = policy.value(rollout.obs[:filled].flatten(0, 1)).view(filled, -1)
            rollout.next_value = policy.value(self.obs)
        episodes.steps = int(valid_view.sum())
        return episodes

    def state_dict(self) -> dict[str, Any]:
        """Where the episodes are, and the normalisers' statistics, as tensors and plain data."""
        return {
            "obs": self.obs.clone(),
            "prev_dones": torch.from_numpy(self.prev_dones.copy()),
            "collecting": torch.from_numpy(self.collecting.copy()),
            "normalizers": normalizer_state(self.envs),
        }

    def snapshot(self) -> bytes | None:
        """The environments themselves, pickled, where that restores them exactly."""
        return snapshot(self.config, self.envs)

    def load_state_dict(self, state: dict[str, Any], env_snapshot: bytes | None, seed: int) -> None:
        """Continue exactly from `env_snapshot` (the pickled environments of the same step), or,
        without one, with the saved statistics and fresh episodes seeded by `seed`."""
        if env_snapshot is not None:
            self.envs.close()
            self.envs = pickle.loads(env_snapshot)
            self.obs = state["obs"]
            self.prev_dones, self.collecting = state["prev_dones"].numpy(), state["collecting"].numpy()
        else:
            load_normalizer_state(self.envs, state["normalizers"])
            self.start_episodes(seed)

    def close(self) -> None:
        self.envs.close()
