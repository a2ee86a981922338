"""Advantage and return estimators on (..., T, N) rollouts: T steps of N vector envs, for each
of any leading dimensions (the runs of a group). `gamma` and `gae_lambda` are floats or
tensors that broadcast against (..., 1, 1): each run its own.

Conventions shared by every function here:
- `terminated[t]`: the episode ended at step t in a terminal state (no future reward).
- `dones[t]`: it ended at step t for any reason (terminated or truncated by a time limit).
- `values[t]` is V(obs[t]); `next_value` is V of the observation after the last step.
  Under Gymnasium's NEXT_STEP autoreset, the observation after a done step is that episode's
  *final* observation, so `values[t + 1]` at a done step is V(final obs): a truncated
  episode bootstraps from it, a terminated one multiplies it by zero. The step that follows
  (the env resetting) is not a real transition; the trainer masks it out of every loss.
"""

from __future__ import annotations

import numpy as np
import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float | torch.Tensor,
    gae_lambda: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and the lambda-returns the critic regresses on, both (..., T, N).

    delta_t = r_t + gamma * V(s_{t+1}) * (1 - terminated_t) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    This is the advantage A(s_t, a_t) of the tutorial's eq. 13 in its lowest-variance form:
    lambda = 1 gives the discounted reward-to-go minus the baseline V(s_t), lambda = 0 the
    one-step TD error.
    """
    next_values = torch.cat([values[..., 1:, :], next_value.unsqueeze(-2)], dim=-2)
    deltas = rewards + gamma * next_values * ~terminated - values
    advantages = _discounted_sums(deltas, gamma * gae_lambda * ~dones)
    return advantages, advantages + values


def _discounted_sums(terms: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """out[t] = terms[t] + decay[t] * out[t + 1], out[T] = 0, along the time axis (-2).

    Step by step in numpy, on views of the tensors (CPU, outside autograd, as rollouts are):
    a call on a row of N values costs a fraction of a torch call, and the loop makes a few
    per step.
    """
    out = torch.empty_like(terms)
    terms_np, out_np = terms.numpy(), out.numpy()
    decay_np = np.broadcast_to(decay.numpy(), terms_np.shape)
    running = np.zeros_like(terms_np[..., 0, :])
    for t in reversed(range(terms_np.shape[-2])):
        running = terms_np[..., t, :] + decay_np[..., t, :] * running
        out_np[..., t, :] = running
    return out


def reward_to_go(rewards: torch.Tensor, dones: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """G_t = sum_{t'=t}^{T_end} gamma^(t'-t) r_t', summed to the end of t's episode, (..., T, N).

    The list after the tutorial's eq. 13 (with its exponent corrected to t' - t). No
    bootstrapping: valid only for episodes that end inside the rollout, which is why the
    Monte-Carlo algorithms collect whole episodes.
    """
    return _discounted_sums(rewards, gamma * ~dones)


def episode_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float | torch.Tensor = 1.0) -> torch.Tensor:
    """R(tau) = sum_t gamma^t r_t of the episode each step belongs to, at every step, (..., T, N).

    The weight every action of an episode gets in the tutorial's eq. 12 (gamma = 1 there).
    An episode starts at t = 0 or right after a done.
    """
    to_go = reward_to_go(rewards, dones, gamma)
    totals = to_go.clone()
    ended, totals_np = dones.numpy(), totals.numpy()
    for t in range(1, totals_np.shape[-2]):  # carry each episode's first value forward
        np.copyto(totals_np[..., t, :], totals_np[..., t - 1, :], where=~ended[..., t - 1, :])
    return totals
