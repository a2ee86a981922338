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
    """The environments of R runs, one Gymnasium vector env of `num_envs` copies each; their
    current observations, which envs just ended an episode (their next step is an autoreset,
    not a transition) and, for whole-episode rollouts, which still collect.

    Fixed rollouts: `rollout.steps` steps of every env, episodes carried over between
    updates. Whole episodes: every env runs exactly one episode per collection, so every
    return is complete. Run r's environments are seeded by `seeds[r]` alone, and a run that
    is not active (finished or failed) is not stepped.
    """

    def __init__(self, configs: list[EnvConfig], discounts: list[float], whole_episodes: bool, seeds: list[int]):
        self.configs = configs
        self.whole_episodes = whole_episodes
        self.envs = [make_vector_env(config) for config in configs]
        for run, (config, discount) in enumerate(zip(configs, discounts)):
            if config.normalize_reward:
                self.envs[run] = normalize_rewards(self.envs[run], gamma=discount)
        first = self.envs[0]
        shape = (len(configs), first.num_envs)
        self.obs_np = np.zeros(shape + first.single_observation_space.shape, dtype=np.float32)
        self.obs = torch.from_numpy(self.obs_np)  # (R, N, obs_dim), a view of obs_np
        self.prev_dones = np.zeros(shape, dtype=bool)
        # In whole-episode mode an env stops contributing after its first episode ends.
        self.collecting = np.ones(shape, dtype=bool)
        for run, seed in enumerate(seeds):
            self.start_episodes(run, seed)

    def start_episodes(self, run: int, seed: int | None = None) -> None:
        self.obs_np[run], _ = self.envs[run].reset(seed=seed)
        self.prev_dones[run] = False
        self.collecting[run] = True

    def collect(self, policy: ActorCritic, rollout: Rollout, active: np.ndarray, generators: list[torch.Generator]) -> list[Episodes]:
        """Fill `rollout` by acting with `policy`, run r's actions drawn from `generators[r]`;
        the runs where `active` is False are not stepped (their steps are invalid)."""
        whole_episodes = self.whole_episodes
        runs = np.flatnonzero(active)
        for run in runs:
            if whole_episodes and not self.collecting[run].all():  # the last batch used them up
                self.start_episodes(run)
        # What the environments return is written through numpy views of the rollout's
        # tensors: numpy's per-call cost is a fraction of torch's on arrays this small.
        rewards_view, terminated_view, dones_view, valid_view = (
            x.numpy() for x in (rollout.rewards, rollout.terminated, rollout.dones, rollout.valid)
        )
        valid_view[~active] = False
        episodes = [Episodes() for _ in self.envs]
        acting = list(runs)
        with torch.inference_mode():
            for t in range(rollout.steps):
                dist_params = policy.actor(self.obs)
                actions = policy.head.sample(dist_params, generators, acting)
                rollout.obs[:, t] = self.obs
                rollout.actions[:, t] = actions
                rollout.dist_params[:, t] = dist_params
                env_actions = policy.head.to_env(actions)
                for run in acting:
                    self._step(run, t, env_actions[run], episodes[run], rewards_view, terminated_view, dones_view, valid_view)
                if whole_episodes:
                    done_runs = [run for run in acting if not self.collecting[run].any()]
                    for run in done_runs:
                        valid_view[run, t + 1:] = False
                    acting = [run for run in acting if run not in done_runs]
                    if not acting:
                        break
            # Neither the critic nor log pi(a|s) plays a part in acting: one batched call each
            # over the steps taken (a whole-episode rollout may end early).
            filled = t + 1
            dist_params = rollout.dist_params[:, :filled]
            rollout.log_probs[:, :filled] = policy.distribution(dist_params).log_prob(rollout.actions[:, :filled])
            obs = rollout.obs[:, :filled]
            rollout.values[:, :filled] = policy.value(obs.flatten(1, 2)).view(obs.shape[:3])
            rollout.next_value = policy.value(self.obs)
        steps = valid_view.sum(axis=(1, 2))
        for run, run_episodes in enumerate(episodes):
            run_episodes.steps = int(steps[run])
        return episodes

    def _step(self, run, t, actions, episodes, rewards_view, terminated_view, dones_view, valid_view) -> None:
        """One step of run `run`'s environments, written into row (run, t) of the rollout."""
        obs, rewards, terminated, truncated, info = self.envs[run].step(actions)
        rewards_view[run, t], terminated_view[run, t] = rewards, terminated
        dones_view[run, t] = dones = terminated | truncated
        valid_view[run, t] = valid = ~self.prev_dones[run] & self.collecting[run]
        self.prev_dones[run] = dones
        self.obs_np[run] = obs
        if "episode" in info:
            finished = info["_episode"] & valid
            episodes.returns += info["episode"]["r"][finished].tolist()
            episodes.lengths += info["episode"]["l"][finished].tolist()
        if self.whole_episodes:
            self.collecting[run] &= ~dones

    def state_dict(self, run: int) -> dict[str, Any]:
        """Where run `run`'s episodes are, and its normalisers' statistics, as tensors and plain data."""
        return {
            "obs": self.obs[run].clone(),
            "prev_dones": torch.from_numpy(self.prev_dones[run].copy()),
            "collecting": torch.from_numpy(self.collecting[run].copy()),
            "normalizers": normalizer_state(self.envs[run]),
        }

    def snapshot(self, run: int) -> bytes | None:
        """Run `run`'s environments themselves, pickled, where that restores them exactly."""
        return snapshot(self.configs[run], self.envs[run])

    def load_state_dict(self, run: int, state: dict[str, Any], env_snapshot: bytes | None, seed: int) -> None:
        """Continue run `run` exactly from `env_snapshot` (its pickled environments of the same
        step), or, without one, with the saved statistics and fresh episodes seeded by `seed`."""
        if env_snapshot is not None:
            self.envs[run].close()
            self.envs[run] = pickle.loads(env_snapshot)
            self.obs[run] = state["obs"]
            self.prev_dones[run], self.collecting[run] = state["prev_dones"].numpy(), state["collecting"].numpy()
        else:
            load_normalizer_state(self.envs[run], state["normalizers"])
            self.start_episodes(run, seed)

    def close(self, run: int) -> None:
        self.envs[run].close()
