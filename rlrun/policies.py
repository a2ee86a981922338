"""Actor-critic MLPs; the action distribution is chosen from the action space in one place."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Distribution

from rlrun.config import PolicyConfig
from rlrun.errors import RLRunError

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(in_dim: int, hidden_sizes: list[int], out_dim: int, activation: str, out_gain: float) -> nn.Sequential:
    """Orthogonal init with a small output gain, so the initial policy is near uniform."""
    sizes = [in_dim, *hidden_sizes]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [_orthogonal(nn.Linear(fan_in, fan_out), math.sqrt(2)), _ACTIVATIONS[activation]()]
    layers.append(_orthogonal(nn.Linear(sizes[-1], out_dim), out_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class CategoricalHead(nn.Module):
    """Discrete actions: the actor outputs logits."""

    action_shape: tuple[int, ...] = ()
    action_dtype = torch.int64

    def __init__(self, space: gym.spaces.Discrete):
        super().__init__()
        self.num_params = int(space.n)

    def distribution(self, params: torch.Tensor) -> Distribution:
        return Categorical(logits=params)


def make_head(space: gym.Space) -> CategoricalHead:
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(space)
    raise RLRunError(
        f"Action space {space} is not supported yet: rlrun handles Discrete action spaces."
    )


class ActorCritic(nn.Module):
    """pi(a|s) and, when `with_critic`, a state-value baseline V(s) as separate MLPs.

    The actor outputs the action distribution's parameters (`dist_params`), so rollouts can
    store them and algorithms can rebuild pi_old exactly, e.g. for KL(pi_old || pi_theta).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: PolicyConfig, with_critic: bool = True):
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise RLRunError(
                f"Observation space {observation_space} is not supported: rlrun's MLP policies "
                "need flat Box observations."
            )
        obs_dim = observation_space.shape[0]
        self.head = make_head(action_space)
        self.actor = mlp(obs_dim, config.hidden_sizes, self.head.num_params, config.activation, out_gain=0.01)
        self.critic = mlp(obs_dim, config.hidden_sizes, 1, config.activation, out_gain=1.0) if with_critic else None

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dist_params, values) for a batch of observations; values are 0 without a critic."""
        return self.actor(obs), self.value(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        if self.critic is None:
            return obs.new_zeros(obs.shape[0])
        return self.critic(obs).squeeze(-1)

    def distribution(self, dist_params: torch.Tensor) -> Distribution:
        return self.head.distribution(dist_params)
