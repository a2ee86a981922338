"""The generic on-policy loop: act, store, estimate advantages, update, log, checkpoint.

Every algorithm runs through this one loop; `rlrun.algos` supply only their advantage
estimator and update rule.
"""

from __future__ import annotations

import logging
import math
import pickle
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
from rlrun.algos.base import policy_change
from rlrun.checkpoint import load_checkpoint, record_failure, save_checkpoint, write_summary
from rlrun.config import Config, flatten, to_object
from rlrun.envs import (
    load_normalizer_stats, make_vector_env, max_episode_steps, normalize_rewards, normalizer_stats, snapshot,
)
from rlrun.errors import RLRunError
from rlrun.evaluation import EVAL_SEED_OFFSET, evaluate
from rlrun.lifecycle import RunInterrupted, StopSignals, TrainingDiverged, non_finite
from rlrun.policies import ActorCritic
from rlrun.rollout import Rollout
from rlrun.tracking import TENSORBOARD_SUBDIR, RunTracker

log = logging.getLogger(__name__)

RESUMABLE_CHANGES = {"resume", "total_timesteps"}  # what a resumed run may change
RECENT_EPISODES = 20  # rollout/recent_return averages the last this many training episodes


def train(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train as `cfg` says, write everything to `run_dir`; return the final evaluation return."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Outside the try: a refused resume leaves the run it names exactly as it was.
    checkpoint = _checkpoint_to_resume(cfg) if cfg.get("resume") else None
    try:
        config = to_object(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if checkpoint is None:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        trainer = Trainer(config, resolved, run_dir)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
        return trainer.run()
    except Exception as err:
        record_failure(run_dir, err)
        raise


def _checkpoint_to_resume(cfg: DictConfig) -> dict[str, Any]:
    config = to_object(cfg)
    checkpoint = load_checkpoint(Path(config.resume))
    if "steps" not in checkpoint["algo"]["optimizer"]:
        raise RLRunError(
            f"Cannot resume {config.resume}: its checkpoint was written by an earlier rlrun whose "
            f"optimizer state this version does not read. `rlrun eval {config.resume}` still works; "
            "train further in a new run."
        )
    saved, now = flatten(checkpoint["config"]), flatten(OmegaConf.to_container(cfg, resolve=True))
    changed = sorted(key for key in saved.keys() | now.keys() if saved.get(key) != now.get(key) and key not in RESUMABLE_CHANGES)
    if changed:
        raise RLRunError(
            f"Cannot resume {config.resume}: a resumed run continues its saved configuration "
            f"and may only change total_timesteps, but these differ: {', '.join(changed)}."
        )
    return checkpoint


class Trainer:
    """One run: its environments, policy, algorithm and rollout storage, and the loop."""

    def __init__(self, config: Config, resolved_config: dict[str, Any], run_dir: Path):
        self.config = config
        self.resolved_config = resolved_config
        self.run_dir = run_dir
        self.console = Console()
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        Distribution.set_default_validate_args(False)  # argument checks cost more than the math

        self.envs = make_vector_env(config.env)
        if config.env.normalize_reward:
            self.envs = normalize_rewards(self.envs, gamma=getattr(config.algo, "gamma", 1.0))
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
        self.updates = 0
        self.wall_seconds = 0.0  # of earlier processes, when resumed
        self.next_eval_step = config.eval_interval
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.checkpoint_step: int | None = None  # env step of the newest checkpoint on disk

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is now."""
        return {
            "config": self.resolved_config,
            "global_step": self.global_step,
            "updates": self.updates,
            "wall_seconds": self.wall_seconds,
            "next_eval_step": self.next_eval_step,
            "recent_returns": list(self.recent_returns),
            "policy": self.policy.state_dict(),
            "algo": self.algo.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "normalizers": normalizer_stats(self.envs),
            # The environments mid-episode, where pickling restores them exactly.
            "envs": snapshot(self.config.env, self.envs),
            "collector": {"obs": self.obs, "prev_dones": self.prev_dones, "collecting": self.collecting},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step, self.updates = state["global_step"], state["updates"]
        self.wall_seconds, self.next_eval_step = state["wall_seconds"], state["next_eval_step"]
        self.recent_returns.extend(state["recent_returns"])
        self.policy.load_state_dict(state["policy"])
        self.algo.load_state_dict(state["algo"])
        torch.set_rng_state(state["torch_rng"])
        self.checkpoint_step = self.global_step
        if state["envs"] is not None:
            self.envs.close()
            self.envs = pickle.loads(state["envs"])
            for name, value in state["collector"].items():
                setattr(self, name, value)
        else:  # not exact: fresh episodes, seeded from the step count
            load_normalizer_stats(self.envs, state["normalizers"])
            self.start_episodes(seed=self.config.seed + self.global_step)
        log.info("resumed from env step %d (update %d)", self.global_step, self.updates)

    def run(self) -> float:
        config = self.config
        start_step, start_time = self.global_step, time.perf_counter()
        status, eval_returns = "failed", np.array([])
        log.info("training %s on %s to %d env steps", self.algo.name, config.env.id, config.total_timesteps)
        with RunTracker(self.run_dir, config.total_timesteps, self.console, start_step) as tracker, StopSignals() as signals:
            try:
                while self.global_step < config.total_timesteps and signals.received is None and not self.target_reached():
                    self.train_one_update(tracker, start_step, start_time)
                if signals.received is None:
                    eval_returns = self.evaluate_and_log(tracker)
                status = "completed" if signals.received is None else "interrupted"
                self.save(time.perf_counter() - start_time)
            except KeyboardInterrupt:  # a second Ctrl-C: keep the last checkpoint as it is
                status = "interrupted"
                raise
            finally:
                summary = self.finish(status, eval_returns, time.perf_counter() - start_time)
                if status == "completed":
                    tracker.hparams(self.resolved_config, {"eval/episodic_return": summary["eval_return_mean"]})
        if signals.received is not None:
            self.console.print(f"[bold yellow]interrupted[/]: checkpoint and summary saved in {self.run_dir}")
            raise RunInterrupted(signals.received)
        self.report(summary)
        return summary["eval_return_mean"]

    def target_reached(self) -> bool:
        target = self.config.target_return
        return target is not None and len(self.recent_returns) == RECENT_EPISODES and bool(np.mean(self.recent_returns) >= target)

    def train_one_update(self, tracker: RunTracker, start_step: int, start_time: float) -> None:
        config = self.config
        lr = config.algo.lr * (1 - self.global_step / config.total_timesteps if config.algo.anneal_lr else 1)
        self.algo.set_learning_rate(lr)
        episode_returns, episode_lengths = self.collect()
        stats = self.update()
        self.updates += 1
        self.check_finite(stats)
        stats["learning_rate"] = lr
        sps = (self.global_step - start_step) / (time.perf_counter() - start_time)
        scalars = {f"train/{key}": value for key, value in stats.items()}
        scalars["perf/sps"] = sps
        if episode_returns:
            scalars["rollout/episodic_return"] = float(np.mean(episode_returns))
            scalars["rollout/episodic_length"] = float(np.mean(episode_lengths))
        recent = float(np.mean(self.recent_returns)) if self.recent_returns else math.nan
        if self.recent_returns:
            scalars["rollout/recent_return"] = recent
        tracker.scalars(scalars, self.global_step)
        tracker.advance(self.global_step, sps, recent, stats["kl"])
        if config.eval_interval and self.global_step >= self.next_eval_step:
            self.evaluate_and_log(tracker)
            self.next_eval_step = (self.global_step // config.eval_interval + 1) * config.eval_interval
        if config.checkpoint_interval and self.updates % config.checkpoint_interval == 0:
            self.save(time.perf_counter() - start_time)

    def start_episodes(self, seed: int | None = None) -> None:
        obs, _ = self.envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.prev_dones = np.zeros(self.envs.num_envs, dtype=bool)
        # In whole-episode mode an env stops contributing after its first episode ends.
        self.collecting = np.ones(self.envs.num_envs, dtype=bool)

    def collect(self) -> tuple[list[float], list[float]]:
        """Fill the rollout; return the returns and lengths of the episodes that finished.

        Fixed rollouts: `rollout_steps` steps of every env, episodes carried over between
        updates. Whole episodes: reset every env and step until each has ended one episode.
        """
        rollout, policy = self.rollout, self.policy
        whole_episodes = self.algo.whole_episodes
        if whole_episodes and not self.collecting.all():  # the last batch used them up
            self.start_episodes()
        # What the environments return is written through numpy views of the rollout's
        # tensors: numpy's per-call cost is a fraction of torch's on arrays this small.
        rewards_view, terminated_view, dones_view, valid_view = (
            x.numpy() for x in (rollout.rewards, rollout.terminated, rollout.dones, rollout.valid)
        )
        episode_returns: list[float] = []
        episode_lengths: list[float] = []
        with torch.inference_mode():
            for t in range(rollout.steps):
                dist_params = policy.actor(self.obs)
                actions = policy.head.sample(dist_params)
                obs, rewards, terminated, truncated, info = self.envs.step(policy.head.to_env(actions))
                rollout.obs[t] = self.obs
                rollout.actions[t] = actions
                rollout.dist_params[t] = dist_params
                rewards_view[t], terminated_view[t] = rewards, terminated
                dones_view[t] = dones = terminated | truncated
                valid_view[t] = valid = ~self.prev_dones & self.collecting
                self.prev_dones = dones
                self.obs = torch.as_tensor(obs, dtype=torch.float32)
                if "episode" in info:
                    finished = info["_episode"] & valid
                    episode_returns += info["episode"]["r"][finished].tolist()
                    episode_lengths += info["episode"]["l"][finished].tolist()
                if whole_episodes:
                    self.collecting &= ~dones
                    if not self.collecting.any():
                        valid_view[t + 1:] = False
                        break
            # Neither the critic nor log pi(a|s) plays a part in acting: one batched call each
            # over the steps taken (a whole-episode rollout may end early).
            filled = t + 1
            rollout.log_probs[:filled] = policy.distribution(rollout.dist_params[:filled]).log_prob(rollout.actions[:filled])
            rollout.values[:filled] = policy.value(rollout.obs[:filled].flatten(0, 1)).view(filled, -1)
            rollout.next_value = policy.value(self.obs)
        self.global_step += int(valid_view.sum())
        self.recent_returns.extend(episode_returns)
        return episode_returns, episode_lengths

    def update(self) -> dict[str, float]:
        advantages, returns = self.algo.advantages(self.rollout)
        batch = self.rollout.batch(advantages, returns)
        stats = self.algo.update(batch)
        if "kl" not in stats:  # unless the algorithm measured it for its own update rule
            stats.update(policy_change(self.policy, batch))
        if self.policy.critic is not None:
            stats["explained_variance"] = explained_variance(batch.old_values, batch.returns)
        return stats

    def evaluate_and_log(self, tracker: RunTracker) -> np.ndarray:
        if self.config.eval_episodes == 0:
            return np.array([])
        returns = evaluate(
            self.policy, self.config.env, self.config.eval_episodes, self.config.seed + EVAL_SEED_OFFSET,
            obs_stats=normalizer_stats(self.envs).get("obs"),
        )
        tracker.scalars({"eval/episodic_return": float(returns.mean())}, self.global_step)
        log.info("step %d: eval return %.1f +- %.1f", self.global_step, returns.mean(), returns.std())
        return returns

    def check_finite(self, stats: dict[str, float]) -> None:
        bad = non_finite(self.policy, stats)
        if bad:
            kept = (
                f"the last good checkpoint (env step {self.checkpoint_step}) is kept"
                if self.checkpoint_step is not None else "no checkpoint had been written yet"
            )
            raise TrainingDiverged(
                f"Training diverged at update {self.updates} (env step {self.global_step}): non-finite "
                f"{', '.join(bad[:5])}; {kept}. A smaller algo.lr or algo.max_grad_norm usually helps."
            )

    def save(self, session_seconds: float) -> None:
        """Checkpoint the current state, unless it is not finite (keep the last good one)."""
        if not non_finite(self.policy, {}):
            save_checkpoint(self.run_dir, {**self.state_dict(), "wall_seconds": self.wall_seconds + session_seconds})
            self.checkpoint_step = self.global_step

    def finish(self, status: str, eval_returns: np.ndarray, session_seconds: float) -> dict[str, Any]:
        """Write summary.json and close the environments."""
        self.envs.close()
        wall_seconds = self.wall_seconds + session_seconds
        summary = {
            "status": status,
            "algo": self.algo.name,
            "env": self.config.env.id,
            "seed": self.config.seed,
            "env_steps": self.global_step,
            "updates": self.updates,
            "wall_seconds": round(wall_seconds, 3),
            "sps": round(self.global_step / wall_seconds, 1) if wall_seconds > 0 else 0.0,
            "eval_episodes": int(eval_returns.size),
            "eval_return_mean": float(eval_returns.mean()) if eval_returns.size else None,
            "eval_return_std": float(eval_returns.std()) if eval_returns.size else None,
            "train_return_recent": float(np.mean(self.recent_returns)) if self.recent_returns else None,
            "target_reached": self.target_reached() if self.config.target_return is not None else None,
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
