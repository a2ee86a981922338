"""The environments and where they are: acting with the policy to fill a `Rollout`."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorWrapper
from gymnasium.wrappers.utils import RunningMeanStd

from rlrun.config import EnvConfig
from rlrun.envs import Normalizers, Rows, make_vector_env, snapshot
from rlrun.policies import Acting, ActorCritic
from rlrun.rollout import Rollout

log = logging.getLogger(__name__)


@dataclass
class Episodes:
    """What one collection produced besides the rollout itself."""

    steps: int = 0  # real transitions (reset steps do not count)
    returns: list[float] = field(default_factory=list)  # of the episodes that finished, raw rewards
    lengths: list[float] = field(default_factory=list)


class Collector:
    """The environments of R runs, one vector env of `num_envs` copies each; their current
    observations, which envs just ended an episode (their next step is an autoreset, not a
    transition), for whole-episode rollouts which still collect, the runs' normalisation
    (`Normalizers`) and the return and length of every episode so far, in raw rewards.

    Fixed rollouts: `rollout.steps` steps of every env, episodes carried over between
    updates. Whole episodes: every env runs exactly one episode per collection, so every
    return is complete. Run r's environments are seeded by `seeds[r]` alone, and a run that
    is not active (finished or failed) is not stepped.
    """

    def __init__(self, configs: list[EnvConfig], discounts: list[float], whole_episodes: bool, seeds: list[int]):
        self.configs = configs
        self.whole_episodes = whole_episodes
        self.envs = [make_vector_env(config) for config in configs]
        first = self.envs[0]
        space = first.single_observation_space
        shape = (len(configs), first.num_envs)
        # The runs of a group share their env config (rlrun.grouping), so its switches too.
        self.normalizers = Normalizers(len(configs), first.num_envs, space, configs[0], discounts)
        self.obs_np = np.zeros(shape + space.shape, dtype=np.float32)
        self.obs = torch.from_numpy(self.obs_np)  # (R, N, obs_dim), a view of obs_np
        # What the environments return, raw, before the runs' step is recorded in one go.
        self.raw_obs = np.zeros(shape + space.shape, dtype=space.dtype)
        self.raw_rewards = np.zeros(shape)
        self.terminated, self.truncated = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        self.episode_returns, self.episode_lengths = np.zeros(shape), np.zeros(shape, dtype=np.int64)
        self.prev_dones = np.zeros(shape, dtype=bool)
        # In whole-episode mode an env stops contributing after its first episode ends.
        self.collecting = np.ones(shape, dtype=bool)
        self.start_episodes(list(range(len(configs))), seeds)

    def start_episodes(self, runs: list[int], seeds: list[int | None]) -> None:
        """Fresh episodes for the `runs`, seeded by `seeds` (None: where their random streams
        are); their first observations update the statistics together, as a step does."""
        for run, seed in zip(runs, seeds):
            self.raw_obs[run], _ = self.envs[run].reset(seed=seed)
        rows = np.array(runs)
        self.obs_np[rows] = self.normalizers.observations(rows, self.raw_obs[rows])
        self.normalizers.reset(rows)
        self.episode_returns[rows], self.episode_lengths[rows] = 0, 0
        self.prev_dones[rows] = False
        self.collecting[rows] = True

    def collect(self, policy: ActorCritic, rollout: Rollout, active: np.ndarray, generators: list[torch.Generator]) -> list[Episodes]:
        """Fill `rollout` by acting with `policy`, run r's actions drawn from `generators[r]`;
        the runs where `active` is False are not stepped (their steps are invalid)."""
        whole_episodes = self.whole_episodes
        runs = np.flatnonzero(active)
        used_up = [run for run in runs if not self.collecting[run].all()]  # whole episodes: by the last batch
        if used_up:
            self.start_episodes(used_up, [None] * len(used_up))
        # What the environments return is written through numpy views of the rollout's
        # tensors: numpy's per-call cost is a fraction of torch's on arrays this small.
        views = tuple(x.numpy() for x in (rollout.rewards, rollout.terminated, rollout.dones, rollout.valid))
        obs_view, actions_view, dist_params_view = (x.numpy() for x in (rollout.obs, rollout.actions, rollout.dist_params))
        valid_view = views[-1]
        valid_view[~active] = False
        episodes = [Episodes() for _ in self.envs]
        acting = list(runs)
        act, head = Acting(policy.actor), policy.head
        # Each acting run draws a whole rollout's noise up front from its own generator.
        noise = head.noise(generators, acting, (rollout.steps, self.obs_np.shape[1]))
        for t in range(rollout.steps):
            obs_view[:, t] = self.obs_np
            dist_params_view[:, t] = dist_params = act(self.obs_np)
            actions_view[:, t] = actions = head.sample(dist_params, noise[:, t])
            env_actions = head.to_env(actions)
            for run in acting:
                self._step(run, env_actions[run])
            self._record(acting, t, views, episodes)
            if whole_episodes:
                done_runs = [run for run in acting if not self.collecting[run].any()]
                for run in done_runs:
                    valid_view[run, t + 1:] = False
                acting = [run for run in acting if run not in done_runs]
                if not acting:
                    break
        with torch.inference_mode():
            # Neither the critic nor log pi(a|s) plays a part in acting: one batched call each
            # over the steps taken (a whole-episode rollout may end early).
            filled = t + 1
            rollout.log_probs[:, :filled] = policy.head.log_prob(rollout.dist_params[:, :filled], rollout.actions[:, :filled])
            obs = rollout.obs[:, :filled]
            rollout.values[:, :filled] = policy.value(obs.flatten(1, 2)).view(obs.shape[:3])
            rollout.next_value = policy.value(self.obs)
        steps = valid_view.sum(axis=(1, 2))
        for run, run_episodes in enumerate(episodes):
            run_episodes.steps = int(steps[run])
        return episodes

    def _step(self, run: int, actions: np.ndarray) -> None:
        """One step of run `run`'s environments; what they return is kept raw until `_record`."""
        self.raw_obs[run], self.raw_rewards[run], self.terminated[run], self.truncated[run], _ = self.envs[run].step(actions)

    def _record(self, acting: list[int], t: int, views: tuple[np.ndarray, ...], episodes: list[Episodes]) -> None:
        """The step the `acting` runs just took, for all of them at once: written into column t
        of the rollout (`views`: rewards, terminated, dones, valid), normalised, and counted
        in their episodes."""
        rewards_view, terminated_view, dones_view, valid_view = views
        runs: Rows = slice(None) if len(acting) == len(self.envs) else np.array(acting)
        terminated, prev_dones = self.terminated[runs], self.prev_dones[runs]
        dones = terminated | self.truncated[runs]
        valid = ~prev_dones & self.collecting[runs]
        rewards = self.raw_rewards[runs]
        rewards_view[runs, t] = self.normalizers.rewards(runs, rewards, terminated, ~prev_dones)
        terminated_view[runs, t], dones_view[runs, t], valid_view[runs, t] = terminated, dones, valid
        self.obs_np[runs] = self.normalizers.observations(runs, self.raw_obs[runs])
        # RecordEpisodeStatistics' count: a reset step starts the next episode at zero.
        returns = self.episode_returns[runs] = np.where(prev_dones, 0.0, self.episode_returns[runs] + rewards)
        lengths = self.episode_lengths[runs] = np.where(prev_dones, 0, self.episode_lengths[runs] + 1)
        finished = dones & valid
        for row in np.flatnonzero(finished.any(1)):
            episodes[acting[row]].returns += returns[row, finished[row]].tolist()
            episodes[acting[row]].lengths += lengths[row, finished[row]].tolist()
        self.prev_dones[runs] = dones  # last: `prev_dones` may be a view of it
        if self.whole_episodes:
            self.collecting[runs] &= ~dones

    def obs_stats(self, run: int) -> RunningMeanStd | None:
        """Run `run`'s observation statistics (a copy), for evaluation; None without normalisation."""
        return self.normalizers.obs_stats(run)

    def state_dict(self, run: int) -> dict[str, Any]:
        """Where run `run`'s episodes are, and its normalisers' statistics, as tensors and plain data."""
        return {
            "obs": self.obs[run].clone(),
            "prev_dones": torch.from_numpy(self.prev_dones[run].copy()),
            "collecting": torch.from_numpy(self.collecting[run].copy()),
            "normalizers": self.normalizers.state(run),
            # The episodes in progress; read only with a snapshot of the same step.
            "discounted_returns": torch.from_numpy(self.normalizers.discounted_returns[run].copy()),
            "episode_returns": torch.from_numpy(self.episode_returns[run].copy()),
            "episode_lengths": torch.from_numpy(self.episode_lengths[run].copy()),
        }

    def snapshot(self, run: int) -> bytes | None:
        """Run `run`'s environments themselves, pickled, where that restores them exactly."""
        return snapshot(self.configs[run], self.envs[run])

    def load_state_dict(self, run: int, state: dict[str, Any], env_snapshot: bytes | None, seed: int) -> None:
        """Continue run `run` exactly from `env_snapshot` (its pickled environments of the same
        step), or, without one, with the saved statistics and fresh episodes seeded by `seed`."""
        self.normalizers.load_state(run, state["normalizers"])
        envs = pickle.loads(env_snapshot) if env_snapshot is not None else None
        if isinstance(envs, VectorWrapper):
            # Pickled by an rlrun whose environments carried Gymnasium's normalisation and
            # episode-statistics wrappers: they would normalise a second time.
            log.warning("%s: its environment snapshot predates the collector's normalisation; fresh episodes", self.configs[run].id)
            envs.close()
            envs = None
        if envs is None:
            self.start_episodes([run], [seed])
            return
        self.envs[run].close()
        self.envs[run] = envs
        self.obs[run] = state["obs"]
        self.prev_dones[run], self.collecting[run] = state["prev_dones"].numpy(), state["collecting"].numpy()
        self.normalizers.discounted_returns[run] = state["discounted_returns"].numpy()
        self.episode_returns[run], self.episode_lengths[run] = state["episode_returns"].numpy(), state["episode_lengths"].numpy()

    def close(self, run: int) -> None:
        self.envs[run].close()
