"""Monte-Carlo policy gradient: the tutorial's eq. 12 and eq. 13.

Both algorithms collect whole episodes: every update resets the `num_envs` environments and
runs each for exactly one episode (to termination or its time limit), so every return is
complete; nothing is cut by the end of a rollout. One gradient step per batch, as in the
tutorial's Algorithm 1: the data is used once, then thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

import torch
from omegaconf import MISSING

from rlrun.algos.base import Algorithm, normalize, score_function_variance
from rlrun.config import OptimConfig, bound, check, unit_interval
from rlrun.returns import episode_returns, gae, reward_to_go
from rlrun.rollout import Batch, Rollout, masked_mean


@dataclass
class PGConfig(OptimConfig):
    """configs/algo/pg.yaml."""

    normalize_advantages: bool = MISSING


class Baseline(str, Enum):
    """What pg_baseline subtracts from the return (the b of the list after eq. 13)."""

    none = "none"
    mean = "mean"  # the mean return of the batch's other episodes
    value = "value"  # a learned V(s_t), regressed on the returns


@dataclass
class PGBaselineConfig(PGConfig):
    """configs/algo/pg_baseline.yaml."""

    reward_to_go: bool = MISSING  # weight a_t by rewards from t on, not the whole episode's
    gamma: float = MISSING  # discount gamma^(t'-t)
    baseline: Baseline = MISSING
    gae_lambda: Optional[float] = MISSING  # GAE(lambda) with the learned V instead of Monte Carlo
    value_steps: int = MISSING  # critic regression steps per update (baseline=value)
    vf_coef: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        unit_interval("algo.gamma", self.gamma, open_at_zero=True)
        bound("algo.value_steps", self.value_steps, ">=", 1)
        bound("algo.vf_coef", self.vf_coef, ">", 0)
        unit_interval("algo.gae_lambda", self.gae_lambda, open_at_zero=False, nullable=True)
        if self.gae_lambda is not None:
            check(
                self.baseline == Baseline.value,
                "algo.gae_lambda needs the learned value baseline (algo.baseline=value); "
                f"got algo.baseline={self.baseline.value}.",
            )

    def check_run(self, num_envs: int, total_timesteps: int) -> None:
        if self.baseline == Baseline.mean:
            check(
                num_envs >= 2,
                "algo.baseline=mean estimates each episode's baseline from the other episodes "
                f"of the batch (one per env), so it needs env.num_envs >= 2; got {num_envs}.",
            )


class PG(Algorithm):
    """Vanilla policy gradient (REINFORCE), eq. 12:

        grad R ~= 1/N sum_n sum_t R(tau_n) grad log pi_theta(a_t^n | s_t^n),

    every action of episode n weighted by that episode's total return. No critic.
    """

    name = "pg"
    config_class = PGConfig
    whole_episodes = True
    config: PGConfig

    @classmethod
    def needs_critic(cls, config):
        return False

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        returns = episode_returns(rollout.rewards, rollout.dones)
        return returns, returns

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        advantages = normalize(batch.advantages, batch.mask) if self.config.normalize_advantages else batch.advantages
        dist = self.policy.distribution(self.policy.actor(batch.obs))
        num_episodes = (batch.dones * batch.mask).sum(1)
        policy_loss = policy_gradient_loss(dist.log_prob(batch.actions), advantages, batch.mask, num_episodes)
        grad_var = score_function_variance(self.policy, batch, advantages, self.generators)
        grad_norm = self.gradient_step(policy_loss)
        return {"policy_loss": policy_loss.detach(), "grad_norm": grad_norm, "grad_var": grad_var}


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, num_episodes: torch.Tensor) -> torch.Tensor:
    """Minus eq. 13's estimate, 1/N sum_n sum_t A_t^n log pi(a_t^n|s_t^n), over each run's N
    episodes (its real transitions, `mask`), (R,).

    Its gradient is minus the policy-gradient estimate (the advantages are constants).
    """
    return -(log_probs * advantages * mask).sum(1) / num_episodes.clamp(min=1)


class PGBaseline(PG):
    """Policy gradient with the improvements listed after eq. 13, each a config switch:

    A(s_t, a_t) = sum_{t'} gamma^(t'-t) r_t' - b: rewards from t on only (`reward_to_go`),
    discounted (`gamma`), minus a baseline b (`baseline`: none, the batch's mean return, or a
    learned V(s_t)); with `gae_lambda` set, GAE(lambda) on the learned V instead.
    """

    name = "pg_baseline"
    config_class = PGBaselineConfig
    config: PGBaselineConfig

    @classmethod
    def needs_critic(cls, config):
        return config.baseline == Baseline.value

    @classmethod
    def discount(cls, config) -> float:
        return config.gamma

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        gamma = self.per_run("gamma").view(-1, 1, 1)
        if config.gae_lambda is not None:
            return gae(
                rollout.rewards, rollout.values, rollout.next_value, rollout.terminated,
                rollout.dones, gamma, self.per_run("gae_lambda").view(-1, 1, 1),
            )
        if config.reward_to_go:
            returns = reward_to_go(rollout.rewards, rollout.dones, gamma)
        else:
            returns = episode_returns(rollout.rewards, rollout.dones, gamma)
        if config.baseline == Baseline.mean:
            return returns - leave_one_out_mean(returns, rollout.valid), returns
        if config.baseline == Baseline.value:
            return returns - rollout.values, returns
        return returns, returns

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        stats = super().update(batch)
        if self.policy.critic is not None:
            vf_coef = self.per_run("vf_coef")
            for _ in range(self.config.value_steps):
                value_loss = 0.5 * batch.mean((self.policy.value(batch.obs) - batch.returns).pow(2))
                self.gradient_step(vf_coef * value_loss)
            stats["value_loss"] = value_loss.detach()
        return stats


def leave_one_out_mean(returns: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """b = E[R(tau)] estimated, for each episode, from the batch's *other* episodes, (..., 1, N)
    on (..., T, N) rollouts.

    In whole-episode rollouts column n is one episode; its value is the episode's mean return
    per step (R(tau) itself when every step carries R(tau); the mean reward-to-go with
    `reward_to_go`). Each episode counts once whatever its length, and leaving episode n out
    keeps b independent of the actions it is subtracted from, so the estimate stays
    unbiased; a plain batch mean would shrink the expected gradient by a factor (1 - 1/N).
    """
    per_episode = masked_mean(returns, valid, -2)
    others = (per_episode.sum(-1, keepdim=True) - per_episode) / (per_episode.shape[-1] - 1)
    return others.unsqueeze(-2)
