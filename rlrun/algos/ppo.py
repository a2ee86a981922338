"""Proximal Policy Optimization: several epochs of minibatch ascent on one batch.

Both variants maximise the importance-weighted surrogate of the tutorial's eq. 17,
    J(theta) = E_{(s,a) ~ pi_old} [ pi_theta(a|s) / pi_old(a|s) * A(s, a) ],
which reuses data sampled from pi_old (theta') for several gradient steps, and keep
pi_theta close to pi_old: PPO-KL with a KL penalty (eq. 18), PPO-clip by clipping the ratio
(eq. 19).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch.distributions import Distribution, kl_divergence

from rlrun.algos.base import FixedRolloutAlgorithm, FixedRolloutConfig, normalize
from rlrun.config import bound, check
from rlrun.rollout import Batch


@dataclass
class PPOConfig(FixedRolloutConfig):
    """Shared by both PPO variants: minibatch epochs over each rollout."""

    epochs: int = MISSING
    num_minibatches: int = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        bound("algo.epochs", self.epochs, ">=", 1)
        bound("algo.num_minibatches", self.num_minibatches, ">=", 1)

    def check_run(self, num_envs: int, total_timesteps: int) -> None:
        super().check_run(num_envs, total_timesteps)
        batch_size = self.rollout_steps * num_envs
        check(
            self.num_minibatches <= batch_size,
            f"algo.num_minibatches ({self.num_minibatches}) exceeds the batch size "
            f"(algo.rollout_steps * env.num_envs = {batch_size}).",
        )


@dataclass
class PPOClipConfig(PPOConfig):
    """configs/algo/ppo_clip.yaml."""

    clip_eps: float = MISSING
    target_kl: Optional[float] = MISSING  # stop an update's epochs once approx_kl exceeds it

    def __post_init__(self) -> None:
        super().__post_init__()
        bound("algo.clip_eps", self.clip_eps, ">", 0)
        bound("algo.target_kl", self.target_kl, ">", 0, nullable=True)


@dataclass
class PPOKLConfig(PPOConfig):
    """configs/algo/ppo_kl.yaml."""

    kl_target: float = MISSING  # d_targ
    beta_init: float = MISSING
    adaptive: bool = MISSING  # false: beta stays beta_init
    beta_min: float = MISSING  # the adaptive rule keeps beta within [beta_min, beta_max]
    beta_max: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        bound("algo.kl_target", self.kl_target, ">", 0)
        bound("algo.beta_init", self.beta_init, ">=", 0)
        bound("algo.beta_min", self.beta_min, ">", 0)
        bound("algo.beta_max", self.beta_max, ">=", self.beta_min)
        if self.adaptive:
            check(
                self.beta_min <= self.beta_init <= self.beta_max,
                f"algo.beta_init ({self.beta_init}) must lie within [algo.beta_min, algo.beta_max] "
                f"= [{self.beta_min}, {self.beta_max}] when algo.adaptive=true.",
            )


class PPO(FixedRolloutAlgorithm):
    """The part both PPO variants share; a subclass supplies `policy_loss`."""

    config: PPOConfig

    def policy_loss(self, ratio: torch.Tensor, advantages: torch.Tensor, dist: Distribution, minibatch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negated surrogate to minimise, and diagnostics to log."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        config = self.config
        history: dict[str, list[torch.Tensor]] = {}
        epochs_done = 0
        for _ in range(config.epochs):
            epoch_kls = []
            for minibatch in batch.minibatches(config.num_minibatches):
                dist_params, values = self.policy(minibatch.obs)
                dist = self.policy.distribution(dist_params)
                log_ratio = dist.log_prob(minibatch.actions) - minibatch.old_log_probs
                ratio = log_ratio.exp()
                advantages = minibatch.advantages
                if config.normalize_advantages:
                    advantages = normalize(advantages)
                policy_loss, diagnostics = self.policy_loss(ratio, advantages, dist, minibatch)
                value_loss = 0.5 * (values - minibatch.returns).pow(2).mean()
                loss = policy_loss + config.vf_coef * value_loss
                if config.ent_coef:  # the bonus; train/entropy is measured once, after the update
                    loss = loss - config.ent_coef * dist.entropy().mean()
                grad_norm = self.gradient_step(loss)
                with torch.no_grad():
                    # k3 estimator of KL(pi_old || pi_theta): unbiased, always >= 0.
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    ratio_min, ratio_max = torch.aminmax(ratio)
                epoch_kls.append(approx_kl)
                step_stats = {
                    "policy_loss": policy_loss, "value_loss": value_loss,
                    "approx_kl": approx_kl, "grad_norm": grad_norm, "ratio_mean": ratio.mean(),
                    "ratio_min": ratio_min, "ratio_max": ratio_max, **diagnostics,
                }
                for key, value in step_stats.items():
                    history.setdefault(key, []).append(value.detach())
            epochs_done += 1
            if self.stop_epochs(torch.stack(epoch_kls).mean()):
                break
        stats = {key: torch.stack(values) for key, values in history.items()}
        summary = {key: values.mean().item() for key, values in stats.items()}
        summary["ratio_min"] = stats["ratio_min"].min().item()
        summary["ratio_max"] = stats["ratio_max"].max().item()
        summary["epochs"] = float(epochs_done)
        return summary

    def stop_epochs(self, approx_kl: torch.Tensor) -> bool:
        """Whether to stop this update's epochs early, given the last epoch's mean approx_kl."""
        return False


class PPOClip(PPO):
    """PPO-clip, tutorial eq. 19:

        J(theta) = E[ min( r_t * A_t, clip(r_t, 1 - eps, 1 + eps) * A_t ) ],
        r_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t).

    Once the ratio has moved past 1 +- eps in the direction the advantage rewards, the
    min picks the clipped, constant term and that sample's gradient is zero.
    """

    name = "ppo_clip"
    config_class = PPOClipConfig
    config: PPOClipConfig

    def policy_loss(self, ratio, advantages, dist, minibatch):
        eps = self.config.clip_eps
        surrogate = ratio * advantages
        clipped_surrogate = ratio.clamp(1 - eps, 1 + eps) * advantages
        loss = -torch.min(surrogate, clipped_surrogate).mean()
        clipfrac = ((ratio - 1).abs() > eps).float().mean()
        return loss, {"clipfrac": clipfrac}

    def stop_epochs(self, approx_kl):
        return self.config.target_kl is not None and approx_kl.item() > self.config.target_kl


class PPOKL(PPO):
    """PPO with a KL penalty, tutorial eq. 18:

        J_PPO(theta) = E[ r_t * A_t ] - beta * KL(pi_old || pi_theta),

    with the exact KL of the action distributions. With `adaptive`, beta follows Schulman
    et al. (2017), sec. 4, after every update (`adapt_kl_beta`).
    """

    name = "ppo_kl"
    config_class = PPOKLConfig
    config: PPOKLConfig

    def __init__(self, config: PPOKLConfig, policy):
        super().__init__(config, policy)
        self.kl_beta = config.beta_init

    def state_dict(self):
        return {**super().state_dict(), "kl_beta": self.kl_beta}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.kl_beta = state["kl_beta"]

    def policy_loss(self, ratio, advantages, dist, minibatch):
        kl = kl_divergence(self.policy.distribution(minibatch.old_dist_params), dist).mean()
        surrogate = (ratio * advantages).mean()
        return -(surrogate - self.kl_beta * kl), {"kl_penalty": kl}

    def update(self, batch: Batch) -> dict[str, float]:
        return {**super().update(batch), "kl_beta": self.kl_beta}  # the beta this update used

    def after_update(self, stats: dict[str, float]) -> None:
        """d of the rule is the trainer's exact KL(pi_old || pi_new) over the batch."""
        if self.config.adaptive:
            config = self.config
            self.kl_beta = adapt_kl_beta(self.kl_beta, stats["kl"], config.kl_target, config.beta_min, config.beta_max)


def adapt_kl_beta(kl_beta: float, kl: float, kl_target: float, beta_min: float, beta_max: float) -> float:
    """Halve beta when the update moved less than d_targ / 1.5, double it past 1.5 d_targ
    (Schulman et al. 2017, sec. 4), within [beta_min, beta_max]."""
    if kl < kl_target / 1.5:
        kl_beta /= 2
    elif kl > kl_target * 1.5:
        kl_beta *= 2
    return min(max(kl_beta, beta_min), beta_max)
