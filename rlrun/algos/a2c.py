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

from rlrun.algos.base import FixedRolloutAlgorithm, FixedRolloutConfig, normalize
from rlrun.rollout import Batch


@dataclass
class A2CConfig(FixedRolloutConfig):
    """configs/algo/a2c.yaml."""


class A2C(FixedRolloutAlgorithm):
    """loss = -mean_t A_t log pi(a_t|s_t) + vf_coef * 0.5 mean_t (V(s_t) - R_t)^2
              - ent_coef * mean_t H(pi(.|s_t)),  one gradient step per rollout."""

    name = "a2c"
    config_class = A2CConfig
    config: A2CConfig

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        config = self.config
        advantages = normalize(batch.advantages, batch.mask) if config.normalize_advantages else batch.advantages
        dist_params, values = self.policy(batch.obs)
        head = self.policy.head
        policy_loss = -batch.mean(head.log_prob(dist_params, batch.actions) * advantages)
        value_loss = 0.5 * batch.mean((values - batch.returns).pow(2))
        loss = policy_loss + self.per_run("vf_coef") * value_loss
        if self.entropy_bonus:
            loss = loss - self.per_run("ent_coef") * batch.mean(head.entropy(dist_params))
        grad_norm = self.gradient_step(loss)
        return {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "grad_norm": grad_norm}
