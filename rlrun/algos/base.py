"""What the trainer needs from an algorithm: advantages for a rollout and an update rule."""

from __future__ import annotations

import torch
from torch import nn

from rlrun.config import OptimConfig
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch, Rollout


class Algorithm:
    """Owns the optimiser, the advantage estimator and the loss of one algorithm.

    The trainer collects rollouts, calls `advantages` then `update`, and logs the dict of
    scalars `update` returns under `train/`.
    """

    name: str
    uses_critic = True  # build a value network V(s)

    def __init__(self, config: OptimConfig, policy: ActorCritic):
        self.config = config
        self.policy = policy
        # eps=1e-5 as in the PPO reference implementations (baselines, CleanRL).
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5)

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, value targets), both (T, N)."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def gradient_step(self, loss: torch.Tensor) -> torch.Tensor:
        """One clipped gradient step on `loss`; returns the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return grad_norm


def normalize(advantages: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per minibatch: a per-batch baseline and step-size control."""
    return (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
