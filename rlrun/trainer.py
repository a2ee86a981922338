"""The generic on-policy loop: act, store, estimate advantages, update, log, checkpoint.

Every algorithm runs through this one loop; `rlrun.algos` supply only their advantage
estimator and update rule.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch.distributions import Distribution

from rlrun.algos import algorithm_class
from rlrun.algos.base import mean_kl
from rlrun.checkpoint import record_failure, save_checkpoint, write_summary
from rlrun.config import Config, to_object
from rlrun.envs import make_vector_env, max_episode_steps
from rlrun.policies import ActorCritic
from rlrun.rollout import Rollout
from rlrun.tracking import TENSORBOARD_SUBDIR, RunTracker

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never replay training seeds


def train(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train as `cfg` says, write everything to `run_dir`; return the final evaluation return."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = to_object(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        return Trainer(config, resolved, run_dir).run()
    except Exception as err:
        record_failure(run_dir, err)
        raise


class Trainer:
    def __init__(self, config: Config, resolved_config: dict[str, Any], run_dir: Path):
        self.config = config
        self.resolved_config = resolved_config
        self.run_dir = run_dir
        self.console = Console()
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        Distribution.set_default_validate_args(False)  # argument checks cost more than the math

        self.envs = make_vector_env(config.env)
        algo_class = algorithm_class(config.algo)
        self.policy = ActorCritic(
            self.envs.single_observation_space, self.envs.single_action_space,
            config.policy, with_critic=algo_class.needs_critic(config.algo),
        )
        self.algo = algo_class(config.algo, self.policy)
        head = self.policy.head
        # Whole episodes need room for the longest one; fixed rollouts have a set length.
        steps = max_episode_steps(config.env) if self.algo.whole_episodes else config.algo.rollout_steps
        self.rollout = Rollout(
            steps, config.env.num_envs, self.envs.single_observation_space.shape,
            head.action_shape, head.action_dtype, head.num_params,
        )
        self.start_episodes(seed=config.seed)
        self.global_step = 0  # real transitions collected (reset steps do not count)
        self.recent_returns: deque[float] = deque(maxlen=20)

    def run(self) -> float:
        config = self.config
        start = time.perf_counter()
        status, eval_returns = "failed", np.array([])
        next_eval_step = config.eval_interval
        log.info("training %s on %s for %d env steps", self.algo.name, config.env.id, config.total_timesteps)
        with RunTracker(self.run_dir, config.total_timesteps, self.console) as tracker:
            try:
                while self.global_step < config.total_timesteps:
                    progress = self.global_step / config.total_timesteps
                    lr = config.algo.lr * (1 - progress if config.algo.anneal_lr else 1)
                    self.algo.set_learning_rate(lr)
                    episode_returns, episode_lengths = self.collect()
                    stats = self.update()
                    stats["learning_rate"] = lr
                    sps = self.global_step / (time.perf_counter() - start)
                    tracker.scalars("train", stats, self.global_step)
                    tracker.scalars("perf", {"sps": sps}, self.global_step)
                    if episode_returns:
                        tracker.scalars("rollout", {
                            "episodic_return": float(np.mean(episode_returns)),
                            "episodic_length": float(np.mean(episode_lengths)),
                        }, self.global_step)
                    recent = float(np.mean(self.recent_returns)) if self.recent_returns else math.nan
                    tracker.advance(self.global_step, sps, recent, stats["kl"])
                    if config.eval_interval and self.global_step >= next_eval_step:
                        self.evaluate_and_log(tracker)
                        next_eval_step += config.eval_interval
                eval_returns = self.evaluate_and_log(tracker)
                status = "completed"
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            finally:
                wall_seconds = time.perf_counter() - start
                summary = self.finish(status, eval_returns, wall_seconds)
                if status == "completed":
                    tracker.hparams(self.resolved_config, {"eval/episodic_return": summary["eval_return_mean"]})
        self.report(summary)
        return summary["eval_return_mean"]

    def start_episodes(self, seed: int | None = None) -> None:
        obs, _ = self.envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.prev_dones = torch.zeros(self.envs.num_envs, dtype=torch.bool)
        # In whole-episode mode an env stops contributing after its first episode ends.
        self.collecting = torch.ones(self.envs.num_envs, dtype=torch.bool)

    def collect(self) -> tuple[list[float], list[float]]:
        """Fill the rollout; return the returns and lengths of the episodes that finished.

        Fixed rollouts: `rollout_steps` steps of every env, episodes carried over between
        updates. Whole episodes: reset every env and step until each has ended one episode.
        """
        rollout, policy = self.rollout, self.policy
        whole_episodes = self.algo.whole_episodes
        if whole_episodes and self.global_step > 0:
            self.start_episodes()
        episode_returns: list[float] = []
        episode_lengths: list[float] = []
        for t in range(rollout.steps):
            with torch.inference_mode():
                dist_params, values = policy(self.obs)
                dist = policy.distribution(dist_params)
                actions = dist.sample()
                log_probs = dist.log_prob(actions)
            obs, rewards, terminated, truncated, info = self.envs.step(actions.numpy())
            rollout.obs[t] = self.obs
            rollout.actions[t] = actions
            rollout.log_probs[t] = log_probs
            rollout.dist_params[t] = dist_params
            rollout.values[t] = values
            rollout.rewards[t] = torch.as_tensor(rewards)
            rollout.terminated[t] = torch.as_tensor(terminated)
            rollout.dones[t] = torch.as_tensor(terminated | truncated)
            rollout.valid[t] = ~self.prev_dones & self.collecting
            self.prev_dones = rollout.dones[t].clone()
            self.obs = torch.as_tensor(obs, dtype=torch.float32)
            if "episode" in info:
                finished = info["_episode"] & rollout.valid[t].numpy()
                episode_returns += info["episode"]["r"][finished].tolist()
                episode_lengths += info["episode"]["l"][finished].tolist()
            if whole_episodes:
                self.collecting &= ~rollout.dones[t]
                if not self.collecting.any():
                    rollout.valid[t + 1:] = False
                    break
        self.global_step += int(rollout.valid.sum())
        with torch.inference_mode():
            rollout.next_value = policy.value(self.obs)
        self.recent_returns.extend(episode_returns)
        return episode_returns, episode_lengths

    def update(self) -> dict[str, float]:
        advantages, returns = self.algo.advantages(self.rollout)
        batch = self.rollout.batch(advantages, returns)
        stats = self.algo.update(batch)
        stats["kl"] = mean_kl(self.policy, batch).item()  # how far this update moved the policy
        if self.policy.critic is not None:
            stats["explained_variance"] = explained_variance(batch.old_values, batch.returns)
        return stats

    def evaluate_and_log(self, tracker: RunTracker) -> np.ndarray:
        returns = self.evaluate()
        if returns.size:
            tracker.scalars("eval", {"episodic_return": float(returns.mean())}, self.global_step)
            log.info("step %d: eval return %.1f +- %.1f", self.global_step, returns.mean(), returns.std())
        return returns

    def evaluate(self) -> np.ndarray:
        """Returns of `eval_episodes` deterministic episodes (the distribution's mode)."""
        episodes = self.config.eval_episodes
        if episodes == 0:
            return np.array([])
        envs = make_vector_env(self.config.env, num_envs=episodes)
        try:
            obs, _ = envs.reset(seed=self.config.seed + EVAL_SEED_OFFSET)
            returns = np.zeros(episodes)
            finished = np.zeros(episodes, dtype=bool)
            while not finished.all():
                with torch.inference_mode():
                    dist_params = self.policy.actor(torch.as_tensor(obs, dtype=torch.float32))
                    actions = self.policy.distribution(dist_params).mode
                obs, rewards, terminated, truncated, _ = envs.step(actions.numpy())
                returns += np.where(finished, 0.0, rewards)
                finished |= terminated | truncated
            return returns
        finally:
            envs.close()

    def finish(self, status: str, eval_returns: np.ndarray, wall_seconds: float) -> dict[str, Any]:
        """Write the checkpoint and summary.json; close the environments."""
        self.envs.close()
        save_checkpoint(self.run_dir, {
            "policy": self.policy.state_dict(),
            "optimizer": self.algo.optimizer.state_dict(),
            "config": self.resolved_config,
            "global_step": self.global_step,
        })
        summary = {
            "status": status,
            "algo": self.algo.name,
            "env": self.config.env.id,
            "seed": self.config.seed,
            "env_steps": self.global_step,
            "wall_seconds": round(wall_seconds, 3),
            "sps": round(self.global_step / wall_seconds, 1) if wall_seconds > 0 else 0.0,
            "eval_episodes": int(eval_returns.size),
            "eval_return_mean": float(eval_returns.mean()) if eval_returns.size else None,
            "eval_return_std": float(eval_returns.std()) if eval_returns.size else None,
            "train_return_recent": float(np.mean(self.recent_returns)) if self.recent_returns else None,
        }
        write_summary(self.run_dir, summary)
        return summary

    def report(self, summary: dict[str, Any]) -> None:
        ret = summary["eval_return_mean"]
        ret_text = f"eval return {ret:.1f} ± {summary['eval_return_std']:.1f}" if ret is not None else "no evaluation"
        self.console.print(
            f"[bold green]done[/] {summary['algo']} on {summary['env']}: {ret_text} | "
            f"{summary['env_steps']:,} steps in {summary['wall_seconds']:.1f} s ({summary['sps']:,.0f} SPS) | "
            f"run dir {self.run_dir} | tensorboard --logdir {self.run_dir / TENSORBOARD_SUBDIR}",
            highlight=False, soft_wrap=True,
        )


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, <= 0 a useless one."""
    target_var = target.var()
    if target_var == 0:
        return math.nan
    return (1 - (target - predicted).var() / target_var).item()
