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
| `gradient_steps(config, num_envs, total_timesteps)` | minibatch steps in a run: with `torch_compile: null`, whether `compile()` pays |

The first four are class-level: the trainer reads them before it builds the environments and
the policy the algorithm is constructed with.

An algorithm object serves a group of R runs trained side by side (a single run is a group of
one): it gets one config per run, and the keys that shape the update (rollout sizes, epochs,
minibatches, switches) are the same in all of them (rlrun.grouping splits groups by them);
scalar hyperparameters may differ and are read per run with `per_run(key)`, as (R,) tensors.
Every loss is a sum over runs of each run's own loss, so run r's gradient is its own.

What the trainer calls for every update, in order (R runs, T steps, N envs, B = T * N):

1. `set_learning_rate(learning_rate(progress))`, `progress` (R,); `active` (R,) bool set to
   the runs that learn in this update (not finished, not failed).
2. `advantages(rollout)` -> (advantages, returns), each (R, T, N) float32, on the rollout's
   (R, T, N) tensors; entries at invalid (reset) steps are ignored.
3. `update(batch)` on the (R, B) transitions (`Batch`: obs (R, B, obs_dim), actions (R, B, ...),
   old_log_probs, old_values, dones, advantages, returns (R, B), old_dist_params (R, B, P),
   mask (R, B): 1 for real transitions, the only ones any loss or statistic may read)
   -> a dict of (R,) float tensors, logged per run as `train/<key>`.
4. The trainer measures the policy change over the batch's states, exact KL(pi_old || pi_new)
   and entropy of pi_new, into the same dict (`kl`, `entropy`), then calls
   `after_update(stats)`: where adaptive rules react to what the update did (PPO-KL's beta).

`state_dict(run)` / `load_state_dict(run, state)` hold what a checkpoint of run `run` needs to
continue exactly, as tensors and plain Python values only (checkpoints load with
`weights_only=True`). The optimiser is one Adam over all of the policy's trainable parameters
(eps 1e-5, as the PPO reference implementations), per run; `gradient_step(loss, moving)` is the
only way an update moves them, and only the runs in `moving` move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch.func import functional_call, grad, vmap

from rlrun.compiling import CompiledStep
from rlrun.config import OptimConfig, bound, check_one_rollout, unit_interval
from rlrun.optim import Adam
from rlrun.policies import ActorCritic
from rlrun.returns import gae
from rlrun.rollout import Batch, Rollout, masked_mean

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

    def __init__(self, configs: list[OptimConfig], policy: ActorCritic, generators: list[torch.Generator]):
        self.configs = configs
        self.config = configs[0]  # for the keys every run of a group shares
        self._per_run: dict[str, torch.Tensor] = {}
        self.policy = policy
        self.generators = generators  # run r's minibatch shuffling draws from generators[r]
        modules = [module for module in (policy.actor, policy.critic) if module is not None]
        self.optimizer = Adam(modules, lr=self.per_run("lr"), eps=1e-5)
        self.max_grad_norm = self.per_run("max_grad_norm", none=math.inf)
        self.active = torch.ones(len(configs), dtype=torch.bool)  # set by the trainer before each update

    def compile(self) -> None:
        """Take every minibatch step as one compiled graph (rlrun/compiling.py): the same
        losses and the same Adam arithmetic, fused."""
        for field in fields(self.config):  # built before tracing: a compiled loss reads them
            if all(isinstance(getattr(config, field.name), (int, float, type(None))) for config in self.configs):
                self.per_run(field.name), self.per_run(field.name, none=math.inf)
        self.minibatch_step = CompiledStep(self)  # type: ignore[method-assign]

    def minibatch_step(self, minibatch: Batch, moving: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step of the `moving` runs on their `minibatch_losses`; the step's
        diagnostics and each run's gradient norm, each (R,)."""
        loss, stats = self.minibatch_losses(minibatch)
        stats["grad_norm"] = self.gradient_step(loss, moving)
        return stats

    def minibatch_losses(self, minibatch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each run's loss on one minibatch, (R,), and diagnostics, each (R,) and detached, for
        algorithms that take many minibatch steps per update (PPO)."""
        raise NotImplementedError

    def per_run(self, key: str, none: float = math.nan) -> torch.Tensor:
        """Each run's value of hyperparameter `key` (null read as `none`), (R,) float32, built
        once per key: the configs do not change, and a compiled loss must find it built."""
        cached = f"{key}:{none}"  # not (key, none): NaN keys defeat torch.compile's dict lookup
        if cached not in self._per_run:
            values = [getattr(config, key) for config in self.configs]
            self._per_run[cached] = torch.tensor([none if value is None else float(value) for value in values])
        return self._per_run[cached]

    @classmethod
    def needs_critic(cls, config: OptimConfig) -> bool:
        return True

    @classmethod
    def rollout_steps(cls, config: OptimConfig) -> int | None:
        return None if cls.whole_episodes else config.rollout_steps

    @classmethod
    def gradient_steps(cls, config: OptimConfig, num_envs: int, total_timesteps: int) -> int | None:
        """Minibatch gradient steps in a whole run, for algorithms whose `minibatch_step` is worth
        compiling (rlrun/compiling.py); None for the others."""
        return None

    @classmethod
    def discount(cls, config: OptimConfig) -> float:
        return 1.0  # eq. 12 weighs undiscounted returns; discounting algorithms override

    def learning_rate(self, progress: torch.Tensor) -> torch.Tensor:
        """Each run's `lr`, decayed linearly to 0 over the run with `anneal_lr`, (R,)."""
        return self.per_run("lr") * (1 - progress if self.config.anneal_lr else 1)

    def set_learning_rate(self, lr: torch.Tensor) -> None:
        self.optimizer.lr = lr

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_update(self, stats: dict[str, torch.Tensor]) -> None:
        """React to the measured policy change (`stats["kl"]`); nothing by default."""

    def state_dict(self, run: int) -> dict[str, Any]:
        return {"optimizer": self.optimizer.run_state_dict(run)}

    def load_state_dict(self, run: int, state: dict[str, Any]) -> None:
        self.optimizer.load_run_state_dict(run, state["optimizer"])

    def gradient_step(self, losses: torch.Tensor, moving: torch.Tensor | None = None) -> torch.Tensor:
        """One gradient step on each run's loss, `losses` (R,), each run's gradient clipped to its
        `max_grad_norm`; only the runs in `moving` (default: the active ones) move. Returns the
        gradient norms before clipping, (R,)."""
        self.optimizer.zero_grad()
        losses.sum().backward()  # runs share no parameter: each gets its own loss's gradient
        return self.optimizer.step(self.max_grad_norm, self.active if moving is None else moving)


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

    def __init__(self, configs: list[FixedRolloutConfig], policy: ActorCritic, generators: list[torch.Generator]):
        super().__init__(configs, policy, generators)
        # Decided once: a compiled loss must not branch on tensor values.
        self.entropy_bonus = bool(self.per_run("ent_coef").any())

    @classmethod
    def discount(cls, config: FixedRolloutConfig) -> float:
        return config.gamma

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        return gae(
            rollout.rewards, rollout.values, rollout.next_value, rollout.terminated,
            rollout.dones, self.per_run("gamma").view(-1, 1, 1), self.per_run("gae_lambda").view(-1, 1, 1),
        )


def normalize(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per run over its real transitions: a per-batch baseline and
    step-size control. (R, B) -> (R, B)."""
    mean = masked_mean(advantages, mask, 1, keepdim=True)
    std = masked_mean((advantages - mean).pow(2), mask, 1, keepdim=True).sqrt()
    return (advantages - mean) / (std + 1e-8)


def score_function_variance(policy: ActorCritic, batch: Batch, advantages: torch.Tensor, generators: list[torch.Generator], max_samples: int = 1024) -> torch.Tensor:
    """Total variance of the per-sample policy-gradient terms A_t * grad log pi(a_t|s_t), per run, (R,).

    The sum over actor parameters of each coordinate's variance across samples (on at most
    `max_samples` random samples of the run's batch). The batch gradient is a sum of these
    terms (over the number of episodes); ignoring the covariance between steps of one
    episode, its variance scales with this number: a good baseline makes it smaller.
    """
    variances = []
    for run, generator in enumerate(generators):
        real = batch.mask[run].nonzero().squeeze(1)
        if len(real) < 2:  # a run that took no part in this batch: no variance to measure
            variances.append(torch.tensor(math.nan))
            continue
        index = real[torch.randperm(len(real), generator=generator)[:max_samples]]
        params = {name: p[run:run + 1].detach() for name, p in policy.actor.named_parameters()}

        def term(params, obs, action, advantage):
            dist_params = functional_call(policy.actor, params, (obs.view(1, 1, -1),))
            return policy.distribution(dist_params).log_prob(action.view(1, 1, *action.shape)).sum() * advantage

        grads = vmap(grad(term), in_dims=(None, 0, 0, 0))(params, batch.obs[run, index], batch.actions[run, index], advantages[run, index])
        variances.append(sum(g.flatten(1).var(dim=0).sum() for g in grads.values()))
    return torch.stack(variances)
