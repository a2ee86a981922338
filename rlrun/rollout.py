"""Rollout storage: preallocated (R, T, N) tensors for R runs, T steps, N envs, turned into a
`Batch` of (R, B) transitions for the update."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int, keepdim: bool = False, count: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of `values` along `dim` over the entries where `mask` (0/1) is 1; 0 where none
    is. `count`: the mask's clamped sum along `dim`, where the caller has it already."""
    if count is None:
        count = mask.sum(dim, keepdim=keepdim).clamp(min=1)
    return (values * mask).sum(dim, keepdim=keepdim) / count


@dataclass
class Batch:
    """The transitions of one rollout per run, shape (R, B, ...). `mask` (R, B) is 1 for a real
    transition and 0 for a slot that carries none (a reset step, or padding where runs have
    different numbers of transitions): every loss and statistic is a mean over `mask`."""

    obs: torch.Tensor
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    old_dist_params: torch.Tensor  # parameters of pi_old(.|s), to rebuild it exactly
    old_values: torch.Tensor
    dones: torch.Tensor  # the episode ended at this step
    advantages: torch.Tensor
    returns: torch.Tensor  # regression targets for V(s)
    mask: torch.Tensor

    def __post_init__(self) -> None:
        # Each run's number of transitions (at least 1), (R,): every `mean` divides by it.
        self.count = self.mask.sum(1).clamp(min=1)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Each run's mean of (R, B) `values` over its transitions, (R,)."""
        return masked_mean(values, self.mask, 1, count=self.count)

    def minibatches(self, num_minibatches: int, generators: list[torch.Generator], drawing: torch.Tensor) -> Iterator[Batch]:
        """Each run's transitions in a random order (from its own generator), cut into
        `num_minibatches` near-equal parts; minibatch k holds part k of every run. Runs not
        `drawing` (bool, (R,)) take no part and leave their generators alone. One minibatch is
        the batch itself: no order is drawn.

        Every minibatch has the same number of slots, ceil(B / num_minibatches), a part's
        transitions first and masked padding after: one shape for the whole run, whatever
        the number of reset steps, so a compiled update is compiled once (see
        rlrun/compiling.py); masked slots cost a few percent more arithmetic.
        """
        if num_minibatches == 1:  # every transition in one step: its order changes nothing
            yield replace(self, mask=self.mask * drawing.unsqueeze(1))
            return
        size = -(-self.mask.shape[1] // num_minibatches)
        index = torch.zeros(len(generators), num_minibatches * size, dtype=torch.long)
        mask = torch.zeros(index.shape)
        for run, (run_mask, generator, draws) in enumerate(zip(self.mask, generators, drawing.tolist())):
            if not draws:
                continue
            real = run_mask.nonzero().squeeze(1)
            order = real[torch.randperm(len(real), generator=generator)]
            slots = _part_slots(len(order), num_minibatches, size)
            index[run, slots], mask[run, slots] = order, 1.0
        rows = torch.arange(len(generators)).unsqueeze(1)
        parts = [getattr(self, f.name)[rows, index].split(size, dim=1) for f in fields(self) if f.name != "mask"]
        for *tensors, part_mask in zip(*parts, mask.split(size, dim=1)):
            yield Batch(*tensors, mask=part_mask)


def _part_slots(length: int, num_parts: int, size: int) -> torch.Tensor:
    """Where element i of an order of `length` goes when it is cut as `tensor_split` cuts it
    (the first length % num_parts parts one longer) and part k starts at slot k * size."""
    quotient, remainder = divmod(length, num_parts)
    part_sizes = quotient + (np.arange(num_parts) < remainder)
    part_of = np.repeat(np.arange(num_parts), part_sizes)
    part_start = np.cumsum(part_sizes) - part_sizes
    return torch.from_numpy(part_of * size + np.arange(length) - part_start[part_of])  # numpy: cheaper per call


class Rollout:
    """T steps of N environments for each of R runs.

    `valid[r, t, n]` is False where env n of run r was resetting at step t (Gymnasium's
    NEXT_STEP autoreset: the step after a done ignores the action and returns the first
    observation of the next episode), and where run r did not act (it has finished, or its
    whole-episode collection ended earlier than another run's). Those steps carry no real
    transition and never reach a loss.
    """

    def __init__(
        self, num_runs: int, steps: int, num_envs: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
        action_dtype: torch.dtype, num_dist_params: int,
    ):
        shape = (num_runs, steps, num_envs)
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
        self.next_value = torch.zeros(num_runs, num_envs)  # V(obs after the last step), for bootstrapping

    def batch(self, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """Every step of the rollout, (R, T * N, ...), with the invalid ones masked."""

        def flat(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.flatten(1, 2)

        return Batch(
            obs=flat(self.obs),
            actions=flat(self.actions),
            old_log_probs=flat(self.log_probs),
            old_dist_params=flat(self.dist_params),
            old_values=flat(self.values),
            dones=flat(self.dones),
            advantages=flat(advantages),
            returns=flat(returns),
            mask=flat(self.valid).float(),
        )
