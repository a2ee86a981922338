"""Proximal Policy Optimization: several epochs of minibatch ascent on one batch.

Both variants maximise the importance-weighted surrogate of the tutorial's eq. 17,
    J(theta) = E_{(s,a) ~ pi_old} [ pi_theta(a|s) / pi_old(a|s) * A(s, a) ],
which reuses data sampled from pi_old (theta') for several gradient steps, and keep
pi_theta close to pi_old: PPO-KL with a KL penalty (eq. 18), PPO-clip by clipping the ratio
(eq. 19).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING

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

    @classmethod
    def gradient_steps(cls, config: PPOConfig, num_envs: int, total_timesteps: int) -> int:
        updates = -(-total_timesteps // (config.rollout_steps * num_envs))
        return updates * config.epochs * config.num_minibatches

    def policy_loss(self, ratio: torch.Tensor, advantages: torch.Tensor, dist_params: torch.Tensor, minibatch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each run's negated surrogate to minimise, (R,), and diagnostics to log, each (R,);
        `dist_params` are pi_theta's on the minibatch."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`epochs` passes of minibatch steps over the batch; a run whose last epoch's mean
        approx_kl says stop (`stop_epochs`) takes no further step in this update."""
        config = self.config
        updating = self.active.clone()  # runs still taking epochs in this update
        epochs_done = torch.zeros(len(updating))
        history: dict[str, list[torch.Tensor]] = {}
        moves: list[torch.Tensor] = []  # per minibatch, 1 for the runs it stepped
        for _ in range(config.epochs):
            epoch_kl, epoch_steps = torch.zeros(len(updating)), torch.zeros(len(updating))
            for minibatch in batch.minibatches(config.num_minibatches, self.generators, updating):
                moving = updating & (minibatch.mask.sum(1) > 0)
                step_stats = self.minibatch_step(minibatch, moving)
                moves.append(moving.float())
                epoch_kl += step_stats["approx_kl"] * moving
                epoch_steps += moving
                for key, value in step_stats.items():
                    history.setdefault(key, []).append(value.detach())
            epochs_done += updating
            updating &= ~self.stop_epochs(epoch_kl / epoch_steps.clamp(min=1))
            if not updating.any():
                break
        return {**summarize(history, torch.stack(moves)), "epochs": epochs_done}

    def minibatch_losses(self, minibatch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each run's loss on `minibatch`, (R,), and the step's diagnostics, each (R,)."""
        dist_params, values = self.policy(minibatch.obs)
        head = self.policy.head
        log_ratio = head.log_prob(dist_params, minibatch.actions) - minibatch.old_log_probs
        ratio = log_ratio.exp()
        advantages = minibatch.advantages
        if self.config.normalize_advantages:
            advantages = normalize(advantages, minibatch.mask)
        policy_loss, diagnostics = self.policy_loss(ratio, advantages, dist_params, minibatch)
        value_loss = 0.5 * minibatch.mean((values - minibatch.returns).pow(2))
        loss = policy_loss + self.per_run("vf_coef") * value_loss
        if self.entropy_bonus:  # train/entropy is measured once, after the update
            loss = loss - self.per_run("ent_coef") * minibatch.mean(head.entropy(dist_params))
        with torch.no_grad():
            real = minibatch.mask > 0
            return loss, {
                "policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                # k3 estimator of KL(pi_old || pi_theta): unbiased, always >= 0.
                "approx_kl": minibatch.mean((ratio - 1) - log_ratio),
                "ratio_mean": minibatch.mean(ratio),
                "ratio_min": torch.where(real, ratio, math.inf).amin(1),
                "ratio_max": torch.where(real, ratio, -math.inf).amax(1),
                **{key: value.detach() for key, value in diagnostics.items()},
            }

    def stop_epochs(self, approx_kl: torch.Tensor) -> torch.Tensor:
        """Which runs stop this update's epochs early, given each run's last epoch mean approx_kl."""
        return torch.zeros_like(approx_kl, dtype=torch.bool)


def summarize(history: dict[str, list[torch.Tensor]], moves: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each run's diagnostics over the minibatch steps it took (`moves`: (steps, R), 1 where
    it took that step): means, and the extremes of the ratio; NaN for a run that took none."""
    stats = {key: torch.stack(values) for key, values in history.items()}
    summary = {key: (values * moves).sum(0) / moves.sum(0) for key, values in stats.items()}
    taken = moves > 0
    summary["ratio_min"] = torch.where(taken, stats["ratio_min"], math.inf).amin(0)
    summary["ratio_max"] = torch.where(taken, stats["ratio_max"], -math.inf).amax(0)
    return summary


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

    def policy_loss(self, ratio, advantages, dist_params, minibatch):
        eps = self.per_run("clip_eps").unsqueeze(1)
        surrogate = ratio * advantages
        clipped_surrogate = torch.clamp(ratio, 1 - eps, 1 + eps) * advantages
        loss = -minibatch.mean(torch.min(surrogate, clipped_surrogate))
        clipfrac = minibatch.mean(((ratio - 1).abs() > eps).float())
        return loss, {"clipfrac": clipfrac}

    def stop_epochs(self, approx_kl):
        return approx_kl > self.per_run("target_kl", none=math.inf)


class PPOKL(PPO):
    """PPO with a KL penalty, tutorial eq. 18:

        J_PPO(theta) = E[ r_t * A_t ] - beta * KL(pi_old || pi_theta),

    with the exact KL of the action distributions. With `adaptive`, beta follows Schulman
    et al. (2017), sec. 4, after every update (`adapt_kl_beta`), each run its own beta.
    """

    name = "ppo_kl"
    config_class = PPOKLConfig
    config: PPOKLConfig

    def __init__(self, configs: list[PPOKLConfig], policy, generators):
        super().__init__(configs, policy, generators)
        self.kl_beta = self.per_run("beta_init").clone()  # adapted in place per run

    def state_dict(self, run):
        return {**super().state_dict(run), "kl_beta": self.kl_beta[run].item()}

    def load_state_dict(self, run, state):
        super().load_state_dict(run, state)
        self.kl_beta[run] = state["kl_beta"]

    def policy_loss(self, ratio, advantages, dist_params, minibatch):
        kl = minibatch.mean(self.policy.head.kl(minibatch.old_dist_params, dist_params))
        surrogate = minibatch.mean(ratio * advantages)
        return -(surrogate - self.kl_beta * kl), {"kl_penalty": kl}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {**super().update(batch), "kl_beta": self.kl_beta.clone()}  # the beta this update used

    def after_update(self, stats: dict[str, torch.Tensor]) -> None:
        """d of the rule is the trainer's exact KL(pi_old || pi_new) over the batch."""
        if self.config.adaptive:
            adapted = adapt_kl_beta(
                self.kl_beta, stats["kl"], self.per_run("kl_target"), self.per_run("beta_min"), self.per_run("beta_max"),
            )
            self.kl_beta = torch.where(self.active, adapted, self.kl_beta)


def adapt_kl_beta(kl_beta: torch.Tensor, kl: torch.Tensor, kl_target: torch.Tensor, beta_min: torch.Tensor, beta_max: torch.Tensor) -> torch.Tensor:
    """Halve beta when the update moved less than d_targ / 1.5, double it past 1.5 d_targ
    (Schulman et al. 2017, sec. 4), within [beta_min, beta_max]; elementwise, per run."""
    kl_beta = torch.where(kl < kl_target / 1.5, kl_beta / 2, torch.where(kl > kl_target * 1.5, kl_beta * 2, kl_beta))
    return torch.clamp(kl_beta, beta_min, beta_max)
