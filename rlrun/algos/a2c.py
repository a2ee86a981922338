"""Advantage actor-critic (A2C; Mnih et al. 2016, synchronous): eq. 13 with a learned
baseline on fixed-length rollouts.

Between the Monte-Carlo policy gradient and PPO on the ladder: like pg_baseline it takes one
gradient step per batch on  -1/B sum_t A_t log pi(a_t|s_t)  (no importance ratio: the data
comes from the policy being updated), but like PPO it collects short rollouts of every env,
carries episodes over between updates and estimates A_t by GAE(lambda) on the critic,
bootstrapping where a rollout cuts an episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from rlrun.algos.base import Algorithm, normalize
from rlrun.config import OptimConfig, bound, check_one_rollout, unit_interval
from rlrun.returns import gae
from rlrun.rollout import Batch, Rollout


@dataclass
class A2CConfig(OptimConfig):
    """configs/algo/a2c.yaml."""

    rollout_steps: int = MISSING
    gamma: float = MISSING
    gae_lambda: float = MISSING
    normalize_advantages: bool = MISSING
    ent_coef: float = MISSING
    vf_coef: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        bound("algo.rollout_steps", self.rollout_steps, ">=", 1)
        unit_interval("algo.gamma", self.gamma, open_at_zero=True)
        unit_interval("algo.gae_lambda", self.gae_lambda, open_at_zero=False)
        bound("algo.ent_coef", self.ent_coef, ">=", 0)
        bound("algo.vf_coef", self.vf_coef, ">=", 0)

    def check_run(self, num_envs: int, total_timesteps: int) -> None:
        check_one_rollout(self.rollout_steps, num_envs, total_timesteps)


class A2C(Algorithm):
    """loss = -mean_t A_t log pi(a_t|s_t) + vf_coef * 0.5 mean_t (V(s_t) - R_t)^2
              - ent_coef * mean_t H(pi(.|s_t)),  one gradient step per rollout."""

    name = "a2c"
    config_class = A2CConfig
    config: A2CConfig

    @classmethod
    def discount(cls, config) -> float:
        return config.gamma

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        return gae(
            rollout.rewards, rollout.values, rollout.next_value, rollout.terminated,
            rollout.dones, self.config.gamma, self.config.gae_lambda,
        )

    def update(self, batch: Batch) -> dict[str, float]:
        config = self.config
        advantages = normalize(batch.advantages) if config.normalize_advantages else batch.advantages
        dist_params, values = self.policy(batch.obs)
        dist = self.policy.distribution(dist_params)
        policy_loss = -(dist.log_prob(batch.actions) * advantages).mean()
        value_loss = 0.5 * (values - batch.returns).pow(2).mean()
        loss = policy_loss + config.vf_coef * value_loss
        if config.ent_coef:
            loss = loss - config.ent_coef * dist.entropy().mean()
        grad_norm = self.gradient_step(loss)
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "grad_norm": grad_norm.item()}
