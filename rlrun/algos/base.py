"""The contract between the generic trainer and an algorithm.

An algorithm is one subclass of `Algorithm` in one module of `rlrun/algos/` plus one yaml in
`configs/algo/`; defining the subclass with a `name` registers it (nothing else is edited).

What the algorithm declares, read by the trainer before and during the run:

| member | what the trainer does with it |
|---|---|
| `name` | the `algo=` choice; `configs/algo/<name>.yaml` is typed by `config_class` |
| `config_class` | the dataclass of the algorithm's keys (a subclass of `OptimConfig`) |
| `whole_episodes` | rollout kind: True collects one complete episode per env per update (the rollout is as long as the env's time limit); False collects fixed rollouts, episodes carried over |
| `needs_critic(config)` | build the policy with a value network V(s) or without |
| `rollout_steps(config)` | length T of a fixed rollout (None for whole episodes) |
| `discount(config)` | gamma of the return the reward normaliser scales by |
| `learning_rate(progress)` | lr for the next update, `progress` = env steps done / total in [0, 1] |

The first four are class-level: the trainer reads them before it builds the environments and
the policy the algorithm is constructed with.

What the trainer calls for every update, in order (T steps, N envs, B = valid steps):

1. `set_learning_rate(learning_rate(progress))`
2. `advantages(rollout)` -> (advantages, returns), each (T, N) float32, on the rollout's
   (T, N) tensors; entries at invalid (reset) steps are ignored.
3. `update(batch)` on the B valid transitions (`Batch`: obs (B, obs_dim), actions (B, ...),
   old_log_probs (B,), old_dist_params (B, P), old_values (B,), dones (B,), advantages (B,),
   returns (B,)) -> a dict of float diagnostics, logged as `train/<key>`.
4. The trainer measures the policy change over the batch's states, exact KL(pi_old || pi_new)
   and entropy of pi_new, into the same dict (`kl`, `entropy`), then calls
   `after_update(stats)`: where adaptive rules react to what the update did (PPO-KL's beta).

`state_dict()` / `load_state_dict()` hold what a checkpoint needs to continue exactly, as
tensors and plain Python values only (checkpoints load with `weights_only=True`). The
optimiser is one Adam over all of the policy's trainable parameters (eps 1e-5, as the PPO
reference implementations); `gradient_step(loss)` is the only way an update moves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch.func import functional_call, grad, vmap

from rlrun.config import OptimConfig, bound, check_one_rollout, unit_interval
from rlrun.optim import Adam, clip_grad_norm_
from rlrun.policies import ActorCritic
from rlrun.returns import gae
from rlrun.rollout import Batch, Rollout

ALGORITHMS: dict[str, type[Algorithm]] = {}  # name -> class, filled as subclasses are defined


class Algorithm:
    """Owns the optimiser, the advantage estimator and the loss of one algorithm."""

    name: ClassVar[str]
    config_class: ClassVar[type[OptimConfig]]
    whole_episodes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # shared bases such as PPO define no name of their own
            ALGORITHMS[cls.name] = cls

    def __init__(self, config: OptimConfig, policy: ActorCritic):
        self.config = config
        self.policy = policy
        self.optimizer = Adam(policy.parameters(), lr=config.lr, eps=1e-5)

    @classmethod
    def needs_critic(cls, config: OptimConfig) -> bool:
        return True

    @classmethod
    def rollout_steps(cls, config: OptimConfig) -> int | None:
        return None if cls.whole_episodes else config.rollout_steps

    @classmethod
    def discount(cls, config: OptimConfig) -> float:
        return 1.0  # eq. 12 weighs undiscounted returns; discounting algorithms override

    def learning_rate(self, progress: float) -> float:
        """`lr`, decayed linearly to 0 over the run with `anneal_lr`."""
        return self.config.lr * (1 - progress if self.config.anneal_lr else 1)

    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.lr = lr

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def after_update(self, stats: dict[str, float]) -> None:
        """React to the measured policy change (`stats["kl"]`); nothing by default."""

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def gradient_step(self, loss: torch.Tensor) -> torch.Tensor:
        """One clipped gradient step on `loss`; returns the gradient norm before clipping."""
        self.optimizer.zero_grad()
        loss.backward()
        max_norm = self.config.max_grad_norm
        grad_norm = clip_grad_norm_(self.optimizer.params, math.inf if max_norm is None else max_norm)
        self.optimizer.step()
        return grad_norm


@dataclass
class FixedRolloutConfig(OptimConfig):
    """The keys of the actor-critic algorithms that learn from fixed-length rollouts with GAE
    advantages (A2C and both PPOs)."""

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


class FixedRolloutAlgorithm(Algorithm):
    """Fixed rollouts, a critic, GAE(lambda) advantages and lambda-returns as value targets."""

    config: FixedRolloutConfig

    @classmethod
    def discount(cls, config: FixedRolloutConfig) -> float:
        return config.gamma

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        return gae(
            rollout.rewards, rollout.values, rollout.next_value, rollout.terminated,
            rollout.dones, self.config.gamma, self.config.gae_lambda,
        )


def normalize(advantages: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per minibatch: a per-batch baseline and step-size control."""
    return (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)


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
