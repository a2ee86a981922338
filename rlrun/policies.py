"""Actor-critic MLPs; the action distribution is chosen from the action space in one place."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

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
    """Discrete actions: the network's outputs are the logits."""

    action_dtype = torch.int64

    def __init__(self, space: gym.spaces.Discrete):
        super().__init__()
        self.num_outputs = self.num_params = int(space.n)
        self.action_shape: tuple[int, ...] = ()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def distribution(self, params: torch.Tensor) -> Distribution:
        return Categorical(logits=params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """The Gumbel-max trick: argmax(logits + G), G = -log E with E ~ Exp(1) per logit, is
        distributed as Categorical(logits) (jax.random.categorical samples so), in a few
        tensor ops instead of building a distribution object every step. Torch's one-sample
        multinomial takes argmax(p / E) of the same Exp(1) draws, so for one generator state
        the actions are the ones it would pick."""
        gumbel = torch.empty_like(params).exponential_().log_().neg_()
        return (params + gumbel).argmax(-1)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        return actions.numpy()


class GaussianHead(nn.Module):
    """Box actions: a diagonal Gaussian N(mu(s), diag(sigma^2)) with a learned log sigma that
    does not depend on the state.

    Actions are sampled unbounded and stored as sampled, so log-probabilities and ratios refer
    to the distribution's own samples; only the copy sent to the environment is clipped to
    the action bounds (as in the PPO reference implementations).
    """

    action_dtype = torch.float32

    def __init__(self, space: gym.spaces.Box, log_std_init: float):
        super().__init__()
        (size,) = space.shape
        self.num_outputs, self.num_params = size, 2 * size
        self.action_shape = (size,)
        self.log_std = nn.Parameter(torch.full((size,), log_std_init))
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32).flatten())
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32).flatten())

    def forward(self, mean: torch.Tensor) -> torch.Tensor:
        """(mean, log_std) side by side: pi_old can be rebuilt exactly from stored params."""
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)

    def distribution(self, params: torch.Tensor) -> Distribution:
        mean, log_std = params.chunk(2, dim=-1)
        return Independent(Normal(mean, log_std.exp()), 1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return self.distribution(params).sample()

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        return actions.clamp(self.low, self.high).numpy()


def make_head(space: gym.Space, config: PolicyConfig) -> CategoricalHead | GaussianHead:
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(space)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.isfinite(space.low).all() and np.isfinite(space.high).all():
        return GaussianHead(space, config.log_std_init)
    raise RLRunError(f"Action space {space} is not supported: rlrun handles Discrete and bounded, flat Box actions.")


class Actor(nn.Module):
    """obs -> the parameters of pi(.|s) (`dist_params`)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, config: PolicyConfig):
        super().__init__()
        self.head = make_head(action_space, config)
        self.body = mlp(obs_dim, config.hidden_sizes, self.head.num_outputs, config.activation, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))


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
        self.actor = Actor(obs_dim, action_space, config)
        self.critic = mlp(obs_dim, config.hidden_sizes, 1, config.activation, out_gain=1.0) if with_critic else None

    @property
    def head(self) -> CategoricalHead | GaussianHead:
        return self.actor.head

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dist_params, values) for a batch of observations; values are 0 without a critic."""
        return self.actor(obs), self.value(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        if self.critic is None:
            return obs.new_zeros(obs.shape[0])
        return self.critic(obs).squeeze(-1)

    def distribution(self, dist_params: torch.Tensor) -> Distribution:
        return self.head.distribution(dist_params)
