"""Actor-critic MLPs for a group of R runs; the action distribution is chosen from the action
space in one place.

Every parameter carries a leading run dimension: run r's networks are slice r of each tensor,
and one batched matmul computes all R runs' layers at once. Inputs are (R, batch, features).
A single run is a group of one (R = 1). Each run's slice, with the run dimension removed, has
the shapes and names of an ordinary `nn.Linear` network: that is what a checkpoint holds
(`run_state_dict`).
"""

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
_NUMPY_ACTIVATIONS = {"tanh": lambda x: np.tanh(x, out=x), "relu": lambda x: np.maximum(x, 0, out=x)}


class StackedLinear(nn.Module):
    """R independent linear layers: y[r] = x[r] W[r]^T + b[r], for x of shape (R, B, fan_in).

    Orthogonal weights (with `gain`) drawn from each run's own generator, zero biases."""

    def __init__(self, fan_in: int, fan_out: int, gain: float, generators: list[torch.Generator]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(len(generators), fan_out, fan_in))
        self.bias = nn.Parameter(torch.zeros(len(generators), fan_out))
        with torch.no_grad():
            for weight, generator in zip(self.weight, generators):
                nn.init.orthogonal_(weight, gain, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def mlp(in_dim: int, hidden_sizes: list[int], out_dim: int, activation: str, out_gain: float, generators: list[torch.Generator]) -> nn.Sequential:
    """Orthogonal init with a small output gain, so the initial policy is near uniform."""
    sizes = [in_dim, *hidden_sizes]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [StackedLinear(fan_in, fan_out, math.sqrt(2), generators), _ACTIVATIONS[activation]()]
    layers.append(StackedLinear(sizes[-1], out_dim, out_gain, generators))
    return nn.Sequential(*layers)


def per_run_draws(shape: tuple[int, ...], generators: list[torch.Generator], runs: list[int], draw: str, fill: float) -> np.ndarray:
    """An (R, *shape) float32 array, row r filled by the in-place sampler `draw` (e.g.
    "normal_") from `generators[r]` for each r in `runs`, `fill` elsewhere: a run's random
    stream advances only when it acts, whatever the other runs of its group do."""
    draws = torch.full((len(generators), *shape), fill)
    for run in runs:
        getattr(draws[run], draw)(generator=generators[run])
    return draws.numpy()


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

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), `distribution(params).log_prob(actions)` in three tensor ops: the loss
        takes it every minibatch step."""
        return params.log_softmax(-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        log_probs = params.log_softmax(-1)
        return -(log_probs.exp() * log_probs).sum(-1)

    def kl(self, old_params: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """KL(pi_old || pi) = sum_a pi_old(a) (log pi_old(a) - log pi(a)), as `kl_divergence`
        of the two distributions, without its type dispatch (which torch.compile cannot trace)."""
        old_log_probs = old_params.log_softmax(-1)
        return (old_log_probs.exp() * (old_log_probs - params.log_softmax(-1))).sum(-1)

    def noise(self, generators: list[torch.Generator], runs: list[int], shape: tuple[int, ...]) -> np.ndarray:
        """What `sample` draws for (R, *shape) actions: Exp(1) per logit, run r's from
        `generators[r]` for the `runs` that act, 1 (no noise) for the others."""
        return per_run_draws((*shape, self.num_params), generators, runs, "exponential_", fill=1.0)

    def numpy_params(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def sample(self, params: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """Actions for `params` (numpy, as acting has them) with the Gumbel-max trick:
        argmax(logits + G), G = -log E with E ~ Exp(1) (`noise`) per logit, is distributed as
        Categorical(logits) (jax.random.categorical samples so); torch's one-sample
        multinomial takes argmax(p / E) of the same draws. No noise: the most likely action."""
        return params.argmax(-1) if noise is None else (params - np.log(noise)).argmax(-1)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions


class GaussianHead(nn.Module):
    """Box actions: a diagonal Gaussian N(mu(s), diag(sigma^2)) with a learned log sigma that
    does not depend on the state.

    Actions are sampled unbounded and stored as sampled, so log-probabilities and ratios refer
    to the distribution's own samples; only the copy sent to the environment is clipped to
    the action bounds (as in the PPO reference implementations).
    """

    action_dtype = torch.float32

    def __init__(self, space: gym.spaces.Box, log_std_init: float, num_runs: int):
        super().__init__()
        (size,) = space.shape
        self.num_outputs, self.num_params = size, 2 * size
        self.action_shape = (size,)
        self.log_std = nn.Parameter(torch.full((num_runs, size), log_std_init))
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32).flatten())
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32).flatten())
        self.low_np, self.high_np = self.low.numpy(), self.high.numpy()

    def forward(self, mean: torch.Tensor) -> torch.Tensor:
        """(mean, log_std) side by side: pi_old can be rebuilt exactly from stored params."""
        return torch.cat([mean, self.log_std.unsqueeze(1).expand_as(mean)], dim=-1)

    def distribution(self, params: torch.Tensor) -> Distribution:
        mean, log_std = params.chunk(2, dim=-1)
        return Independent(Normal(mean, log_std.exp()), 1)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) = sum_i -((a_i - mu_i) / sigma_i)^2 / 2 - log sigma_i - log(2 pi) / 2: what
        `distribution(params).log_prob(actions)` computes, from log sigma directly and without
        building distribution objects every minibatch step."""
        mean, log_std = params.chunk(2, dim=-1)
        z = (actions - mean) * torch.exp(-log_std)
        return -(0.5 * z.pow(2) + log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * mean.shape[-1]

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        _, log_std = params.chunk(2, dim=-1)
        return (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)

    def kl(self, old_params: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """KL(pi_old || pi) = sum_i log(sigma_i / sigma_old_i) + (sigma_old_i^2 + (mu_old_i - mu_i)^2)
        / (2 sigma_i^2) - 1/2, as `kl_divergence` of the two distributions, without its type
        dispatch (which torch.compile cannot trace)."""
        old_mean, old_log_std = old_params.chunk(2, dim=-1)
        mean, log_std = params.chunk(2, dim=-1)
        variance_ratio = torch.exp(2 * (old_log_std - log_std))
        return (0.5 * (variance_ratio + (old_mean - mean).pow(2) * torch.exp(-2 * log_std) - 1) - (old_log_std - log_std)).sum(-1)

    def noise(self, generators: list[torch.Generator], runs: list[int], shape: tuple[int, ...]) -> np.ndarray:
        """What `sample` draws for (R, *shape) actions: N(0, 1) per action dimension, run r's
        from `generators[r]` for the `runs` that act, 0 (the mean) for the others."""
        return per_run_draws((*shape, self.num_outputs), generators, runs, "normal_", fill=0.0)

    def numpy_params(self, mean: np.ndarray) -> np.ndarray:
        """`forward` in numpy, for acting."""
        log_std = self.log_std.detach().numpy()[:, None]
        return np.concatenate([mean, np.broadcast_to(log_std, mean.shape)], axis=-1)

    def sample(self, params: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """mean + sigma * `noise` (N(0, 1) draws) for `params` in numpy, as acting has them;
        no noise: the mean, the most likely action."""
        mean, log_std = np.split(params, 2, axis=-1)
        return mean if noise is None else mean + np.exp(log_std) * noise

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(actions, self.low_np), self.high_np)


def make_head(space: gym.Space, config: PolicyConfig, num_runs: int) -> CategoricalHead | GaussianHead:
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(space)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.isfinite(space.low).all() and np.isfinite(space.high).all():
        return GaussianHead(space, config.log_std_init, num_runs)
    raise RLRunError(f"Action space {space} is not supported: rlrun handles Discrete and bounded, flat Box actions.")


class Actor(nn.Module):
    """obs -> the parameters of pi(.|s) (`dist_params`)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, config: PolicyConfig, generators: list[torch.Generator]):
        super().__init__()
        self.head = make_head(action_space, config, len(generators))
        self.body = mlp(obs_dim, config.hidden_sizes, self.head.num_outputs, config.activation, 0.01, generators)
        self.activation = config.activation

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))


class Acting:
    """The actor as acting calls it, once per env step on a few rows: the forward pass in numpy,
    on views of the actor's parameters as they are when this is made (make one per collection;
    an update moves the parameters in place, under the views).

    Why numpy: on inputs this small every operation costs its fixed per-call cost, and numpy's
    is a fraction of torch's and of the module calls'. The arithmetic is `Actor.forward`'s in
    float32, rounded in BLAS's order.
    """

    def __init__(self, actor: Actor):
        linears = [layer for layer in actor.body if isinstance(layer, StackedLinear)]
        self.layers = [(linear.weight.detach().numpy().transpose(0, 2, 1), linear.bias.detach().numpy()[:, None]) for linear in linears]
        self.activation = _NUMPY_ACTIVATIONS[actor.activation]
        self.head = actor.head

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The parameters of pi(.|s), (R, N, P), for (R, N, obs_dim) float32 observations."""
        x = obs
        for weight, bias in self.layers[:-1]:
            x = self.activation(np.matmul(x, weight) + bias)
        weight, bias = self.layers[-1]
        return self.head.numpy_params(np.matmul(x, weight) + bias)


class ActorCritic(nn.Module):
    """pi(a|s) and, when `with_critic`, a state-value baseline V(s) as separate MLPs, for as
    many runs as `generators` (each run's initial weights come from its own generator).

    The actor outputs the action distribution's parameters (`dist_params`), so rollouts can
    store them and algorithms can rebuild pi_old exactly, e.g. for KL(pi_old || pi_theta).
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: PolicyConfig, with_critic: bool,
        generators: list[torch.Generator],
    ):
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise RLRunError(
                f"Observation space {observation_space} is not supported: rlrun's MLP policies "
                "need flat Box observations."
            )
        obs_dim = observation_space.shape[0]
        self.num_runs = len(generators)
        self.obs_shape = observation_space.shape
        self.actor = Actor(obs_dim, action_space, config, generators)
        self.critic = mlp(obs_dim, config.hidden_sizes, 1, config.activation, 1.0, generators) if with_critic else None

    @property
    def head(self) -> CategoricalHead | GaussianHead:
        return self.actor.head

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dist_params, values) for (R, B, obs_dim) observations; values are 0 without a critic."""
        return self.actor(obs), self.value(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        if self.critic is None:
            return obs.new_zeros(obs.shape[:-1])
        return self.critic(obs).squeeze(-1)

    def distribution(self, dist_params: torch.Tensor) -> Distribution:
        return self.head.distribution(dist_params)

    def run_state_dict(self, run: int) -> dict[str, torch.Tensor]:
        """Run `run`'s parameters without the run dimension (an ordinary network's shapes),
        and the buffers, which all runs share."""
        parameters = dict(self.named_parameters())
        return {name: (value[run] if name in parameters else value).clone() for name, value in self.state_dict().items()}

    def load_run_state_dict(self, run: int, state: dict[str, torch.Tensor]) -> None:
        """Put a `run_state_dict` into slot `run` (in place: the optimizer's views stay valid)."""
        own = self.state_dict()
        parameters = dict(self.named_parameters())
        if set(state) != set(own):
            raise RuntimeError(f"keys differ: missing {sorted(set(own) - set(state))}, unexpected {sorted(set(state) - set(own))}")
        with torch.no_grad():
            for name, value in state.items():
                slot = own[name][run] if name in parameters else own[name]
                if slot.shape != value.shape:  # copy_ would broadcast a smaller tensor
                    raise RuntimeError(f"{name}: the checkpoint holds shape {tuple(value.shape)}, this network {tuple(slot.shape)}")
                slot.copy_(value)
