"""Rollout storage: preallocated (T, N) tensors, flattened into a `Batch` for the update."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """Flat, valid transitions of one rollout (reset steps removed), shape (B, ...)."""

    obs: torch.Tensor
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    old_dist_params: torch.Tensor  # parameters of pi_old(.|s), to rebuild it exactly
    old_values: torch.Tensor
    dones: torch.Tensor  # the episode ended at this step
    advantages: torch.Tensor
    returns: torch.Tensor  # regression targets for V(s)

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, index: torch.Tensor) -> Batch:
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def minibatches(self, num_minibatches: int) -> Iterator[Batch]:
        """A random partition into `num_minibatches` near-equal parts (torch's global RNG);
        fewer when the batch has fewer samples than that."""
        # One gather per field, then views: half the indexing ops of gathering every part.
        shuffled = self[torch.randperm(len(self))]
        parts = [getattr(shuffled, f.name).tensor_split(num_minibatches) for f in fields(self)]
        for tensors in zip(*parts):
            if len(tensors[0]):
                yield Batch(*tensors)


class Rollout:
    """T steps of N environments.

    `valid[t, n]` is False where env n was resetting at step t (Gymnasium's NEXT_STEP
    autoreset: the step after a done ignores the action and returns the first observation
    of the next episode). Those steps carry no real transition and never reach a loss.
    """

    def __init__(self, steps: int, num_envs: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...], action_dtype: torch.dtype, num_dist_params: int):
        shape = (steps, num_envs)
        self.steps = steps
        self.obs = torch.zeros(shape + obs_shape)
        self.actions = torch.zeros(shape + action_shape, dtype=action_dtype)
        self.log_probs = torch.zeros(shape)
        self.dist_params = torch.zeros(shape + (num_dist_params,))
        self.values = torch.zeros(shape)
        self.rewards = torch.zeros(shape)
        self.terminated = torch.zeros(shape, dtype=torch.bool)
        self.dones = torch.zeros(shape, dtype=torch.bool)
        self.valid = torch.ones(shape, dtype=torch.bool)
        self.next_value = torch.zeros(num_envs)  # V(obs after the last step), for bootstrapping

    def batch(self, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        valid = self.valid
        return Batch(
            obs=self.obs[valid],
            actions=self.actions[valid],
            old_log_probs=self.log_probs[valid],
            old_dist_params=self.dist_params[valid],
            old_values=self.values[valid],
            dones=self.dones[valid],
            advantages=advantages[valid],
            returns=returns[valid],
        )
