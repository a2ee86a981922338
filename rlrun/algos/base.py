"""What the trainer needs from an algorithm: advantages for a rollout and an update rule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import kl_divergence
from torch.func import functional_call, grad, vmap

from rlrun.config import OptimConfig
from rlrun.optim import Adam, clip_grad_norm_
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch, Rollout


class Algorithm:
    """Owns the optimiser, the advantage estimator and the loss of one algorithm.

    The trainer collects rollouts, calls `advantages` then `update`, and logs the dict of
    scalars `update` returns under `train/`.
    """

    name: str
    whole_episodes = False  # collect complete episodes per update instead of fixed rollouts

    def __init__(self, config: OptimConfig, policy: ActorCritic):
        self.config = config
        self.policy = policy
        # eps=1e-5 as in the PPO reference implementations (baselines, CleanRL).
        self.optimizer = Adam(policy.parameters(), lr=config.lr, eps=1e-5)

    @classmethod
    def needs_critic(cls, config: OptimConfig) -> bool:
        """Whether the policy needs a value network V(s) for this config."""
        return True

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, value targets), both (T, N)."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue this algorithm exactly."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.lr = lr

    def gradient_step(self, loss: torch.Tensor) -> torch.Tensor:
        """One clipped gradient step on `loss`; returns the gradient norm before clipping."""
        self.optimizer.zero_grad()
        loss.backward()
        max_norm = self.config.max_grad_norm
        grad_norm = clip_grad_norm_(self.optimizer.params, math.inf if max_norm is None else max_norm)
        self.optimizer.step()
        return grad_norm


def normalize(advantages: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per minibatch: a per-batch baseline and step-size control."""
    return (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)


def policy_change(policy: ActorCritic, batch: Batch) -> dict[str, float]:
    """Where an update left the policy, over the batch's states: the exact mean
    KL(pi_old || pi_theta), pi_old as stored at collection, and the mean entropy of pi_theta."""
    with torch.no_grad():
        old = policy.distribution(batch.old_dist_params)
        new = policy.distribution(policy.actor(batch.obs))
        return {"kl": kl_divergence(old, new).mean().item(), "entropy": new.entropy().mean().item()}


def score_function_variance(policy: ActorCritic, batch: Batch, advantages: torch.Tensor, max_samples: int = 1024) -> float:
    """Total variance of the per-sample policy-gradient terms A_t * grad log pi(a_t|s_t).

    The sum over actor parameters of each coordinate's variance across samples (on at most
    `max_samples` random samples of the batch). The batch gradient is a sum of these terms
    (over the number of episodes); ignoring the covariance between steps of one episode, its
    variance scales with this number: a good baseline makes it smaller.
    """
    index = torch.randperm(len(batch))[:max_samples]
    params = {name: p.detach() for name, p in policy.actor.named_parameters()}

    def term(params, obs, action, advantage):
        dist_params = functional_call(policy.actor, params, (obs,))
        return policy.distribution(dist_params).log_prob(action) * advantage

    grads = vmap(grad(term), in_dims=(None, 0, 0, 0))(params, batch.obs[index], batch.actions[index], advantages[index])
    return sum(g.flatten(1).var(dim=0).sum() for g in grads.values()).item()
