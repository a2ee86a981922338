"""The generic on-policy loop: act, store, estimate advantages, update, log, checkpoint.

Every algorithm runs through this one loop; `rlrun.algos` supply only their advantage
estimator and update rule (the contract is in `rlrun/algos/base.py`), `Collector` the acting.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch.distributions import Distribution, kl_divergence

from rlrun.algos import algorithm_class
from rlrun.checkpoint import (
    check_resumable, has_checkpoint, load_checkpoint, load_env_snapshot, read_summary, record_failure, save_checkpoint, write_summary,
)
from rlrun.collector import Collector
from rlrun.config import Config, to_object
from rlrun.envs import max_episode_steps, normalizer_stats
from rlrun.errors import RLRunError
from rlrun.evaluation import EVAL_SEED_OFFSET, evaluate
from rlrun.lifecycle import DiskFull, RunInterrupted, RunLock, StopSignals, TrainingDiverged, disk_full, non_finite
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch, Rollout
from rlrun.tracking import TENSORBOARD_SUBDIR, RunTracker

log = logging.getLogger(__name__)

RECENT_EPISODES = 20  # rollout/recent_return averages the last this many training episodes


@dataclass
class Job:
    """One run of a group: its composed config (Hydra's, `hydra` node included or not), its run
    directory, the config files chosen (algo, env, preset) and whether a checkpoint already in
    `run_dir` is its own to continue (see `train`)."""

    cfg: DictConfig
    run_dir: Path
    choices: dict[str, str] | None = None
    continue_run: bool = False


def train_group(jobs: list[Job], signals: StopSignals | None = None) -> list[float | Exception]:
    """Train `jobs` together in this process; per job, its final evaluation return or the
    error (an `RLRunError`) that ended it. A stop signal checkpoints every run and raises
    `RunInterrupted`."""
    results: list[float | Exception] = []
    for job in jobs:  # TEMPORARY: one after another until the batched engine lands
        try:
            results.append(train(job.cfg, job.run_dir, signals, job.choices, job.continue_run))
        except RLRunError as err:
            results.append(err)
    return results


def train(
    cfg: DictConfig, run_dir: str | Path, signals: StopSignals | None = None, choices: dict[str, str] | None = None,
    continue_run: bool = False,
) -> float:
    """Train as `cfg` says, write everything to `run_dir`; return the final evaluation return.

    `signals`: stop handling installed by the caller before its slow imports (so a signal
    during start-up still ends in a clean, resumable stop); installed here otherwise.
    `choices`: the config files chosen (algo, env, preset), shown and logged as hyperparameters.
    `continue_run`: a checkpoint already in `run_dir` is this job's own (a sweep's job
    directory is new to each sweep, so only a requeued or re-run job finds one): continue it.
    """
    run_dir = Path(run_dir)
    try:
        config = to_object(cfg)
    except RLRunError as err:
        if not cfg.get("resume"):  # a refused resume leaves its run as it was
            record_failure(run_dir, err)
        raise
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    with RunLock(run_dir), (nullcontext(signals) if signals else StopSignals()) as signals:
        # Outside the try: a refused resume leaves the run it names exactly as it was.
        resume_dir = Path(config.resume) if config.resume else run_dir if continue_run and has_checkpoint(run_dir) else None
        checkpoint = _checkpoint_to_resume(resume_dir, resolved) if resume_dir else None
        try:
            if checkpoint is None:
                (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
            trainer = Trainer(config, resolved, run_dir, choices)
            if checkpoint is not None:
                trainer.load_state_dict(checkpoint, load_env_snapshot(run_dir, checkpoint["global_step"]))
            return trainer.run(signals)
        except (Exception, KeyboardInterrupt) as err:
            if disk_full(err):
                raise DiskFull(run_dir) from None
            if not isinstance(err, KeyboardInterrupt):
                record_failure(run_dir, err)
            raise


def _checkpoint_to_resume(run_dir: Path, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue from, checked against the configuration; None (start afresh
    with the same configuration) for a run that was stopped before its first checkpoint."""
    if not has_checkpoint(run_dir):
        Console(stderr=True).print(f"{run_dir} has no checkpoint yet: training it from the start with its configuration", highlight=False)
        return None
    checkpoint = load_checkpoint(run_dir)
    check_resumable(run_dir, checkpoint["config"], resolved)
    return checkpoint


class Trainer:
    """One run: its collector, policy, algorithm and rollout storage, and the loop."""

    def __init__(self, config: Config, resolved_config: dict[str, Any], run_dir: Path, choices: dict[str, str] | None = None):
        self.config = config
        self.resolved_config = resolved_config
        self.run_dir = run_dir
        self.choices = choices or {}
        self.console = Console()
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        Distribution.set_default_validate_args(False)  # argument checks cost more than the math

        algo_class = algorithm_class(config.algo)
        self.collector = Collector(config.env, algo_class.discount(config.algo), algo_class.whole_episodes, seed=config.seed)
        envs = self.collector.envs
        self.policy = ActorCritic(
            envs.single_observation_space, envs.single_action_space,
            config.policy, with_critic=algo_class.needs_critic(config.algo),
        )
        self.algo = algo_class(config.algo, self.policy)
        head = self.policy.head
        # Whole episodes need room for the longest one; fixed rollouts have a set length.
        steps = algo_class.rollout_steps(config.algo) or max_episode_steps(config.env)
        self.rollout = Rollout(
            steps, config.env.num_envs, envs.single_observation_space.shape,
            head.action_shape, head.action_dtype, head.num_params,
        )
        self.global_step = 0  # real transitions collected (reset steps do not count)
        self.updates = 0
        self.wall_seconds = 0.0  # of earlier processes, when resumed
        self.cpu_seconds = 0.0  # likewise: the compute a run cost, whatever the machine's load
        self.session_start_cpu = time.process_time()
        self.next_eval_step = config.eval_interval
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.checkpoint_step: int | None = None  # env step of the newest checkpoint on disk

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue where the run is now, as tensors and plain data."""
        return {
            "config": self.resolved_config,
            "global_step": self.global_step,
            "updates": self.updates,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds + self.session_cpu_seconds(),
            "next_eval_step": self.next_eval_step,
            "recent_returns": list(self.recent_returns),
            "policy": self.policy.state_dict(),
            "algo": self.algo.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "collector": self.collector.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], env_snapshot: bytes | None = None) -> None:
        try:
            self.global_step, self.updates = state["global_step"], state["updates"]
            self.wall_seconds, self.next_eval_step = state["wall_seconds"], state["next_eval_step"]
            self.cpu_seconds = state["cpu_seconds"]
            self.recent_returns.extend(state["recent_returns"])
            self.policy.load_state_dict(state["policy"])
            self.algo.load_state_dict(state["algo"])
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise RLRunError(f"The checkpoint of {self.run_dir} does not fit this run ({type(err).__name__}: {err}).") from None
        # Without the exact environments, fresh episodes seeded from the step count.
        self.collector.load_state_dict(state["collector"], env_snapshot, seed=self.config.seed + self.global_step)
        self.checkpoint_step = self.global_step
        log.info("resumed from env step %d (update %d)%s", self.global_step, self.updates, "" if env_snapshot else " with fresh episodes")

    def run(self, signals: StopSignals) -> float:
        config = self.config
        start_step, start_time = self.global_step, time.perf_counter()
        status, eval_returns = "failed", np.array([])
        self.write_running_summary()
        self.announce()
        log.info("training %s on %s to %d env steps", self.algo.name, config.env.id, config.total_timesteps)
        with RunTracker(self.run_dir, config.total_timesteps, self.console, start_step) as tracker:
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
                    tracker.hparams(self.resolved_config, self.choices, {"eval/episodic_return": summary["eval_return_mean"]})
        if signals.received is not None:
            self.console.print(
                f"[bold yellow]interrupted[/] at env step {self.global_step:,}: checkpoint and summary saved in "
                f"{self.run_dir}; continue with: rlrun train resume={self.run_dir}", highlight=False, soft_wrap=True,
            )
            raise RunInterrupted(signals.received)
        self.report(summary, start_step)
        return summary["eval_return_mean"]

    def announce(self) -> None:
        config, done = self.config, self.global_step
        if done >= config.total_timesteps:
            what = f"nothing to train: {done:,} of {config.total_timesteps:,} env steps already done (give total_timesteps=N to train longer); evaluating"
        else:
            what = f"training {self.algo.name} on {config.env.id}" + (f" from env step {done:,}" if done else "") + f" to {config.total_timesteps:,} env steps"
        preset = self.choices.get("preset")
        if preset and preset != "none":
            what += f" with the preset {preset}"
        self.console.print(f"{what} | run dir {self.run_dir}", highlight=False, soft_wrap=True)

    def target_reached(self) -> bool:
        target = self.config.target_return
        return target is not None and len(self.recent_returns) == RECENT_EPISODES and bool(np.mean(self.recent_returns) >= target)

    def train_one_update(self, tracker: RunTracker, start_step: int, start_time: float) -> None:
        config = self.config
        lr = self.algo.learning_rate(self.global_step / config.total_timesteps)
        self.algo.set_learning_rate(lr)
        episodes = self.collector.collect(self.policy, self.rollout)
        self.global_step += episodes.steps
        self.recent_returns.extend(episodes.returns)
        stats = self.update()
        self.updates += 1
        self.check_finite(stats)
        stats["learning_rate"] = lr
        sps = (self.global_step - start_step) / (time.perf_counter() - start_time)
        scalars = {f"train/{key}": value for key, value in stats.items()}
        scalars["perf/sps"] = sps
        if episodes.returns:
            scalars["rollout/episodic_return"] = float(np.mean(episodes.returns))
            scalars["rollout/episodic_length"] = float(np.mean(episodes.lengths))
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

    def update(self) -> dict[str, float]:
        advantages, returns = self.algo.advantages(self.rollout)
        batch = self.rollout.batch(advantages, returns)
        stats = self.algo.update(batch)
        stats.update(policy_change(self.policy, batch))
        self.algo.after_update(stats)
        if self.policy.critic is not None:
            stats["explained_variance"] = explained_variance(batch.old_values, batch.returns)
        return stats

    def evaluate_and_log(self, tracker: RunTracker) -> np.ndarray:
        if self.config.eval_episodes == 0:
            return np.array([])
        returns = evaluate(
            self.policy, self.config.env, self.config.eval_episodes, self.config.seed + EVAL_SEED_OFFSET,
            obs_stats=normalizer_stats(self.collector.envs).get("obs"),
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
            state = {**self.state_dict(), "wall_seconds": self.wall_seconds + session_seconds}
            save_checkpoint(self.run_dir, state, self.collector.snapshot())
            self.checkpoint_step = self.global_step

    def session_cpu_seconds(self) -> float:
        """CPU time of this process since the run started in it (all its threads)."""
        return time.process_time() - self.session_start_cpu

    def write_running_summary(self) -> None:
        """Say at once that this process trains here: readers tell a live run from a dead one."""
        summary = {**read_summary(self.run_dir), "status": "running", "pid": os.getpid(), "host": socket.gethostname()}
        summary.update(algo=self.algo.name, env=self.config.env.id, seed=self.config.seed)
        write_summary(self.run_dir, summary)

    def finish(self, status: str, eval_returns: np.ndarray, session_seconds: float) -> dict[str, Any]:
        """Write summary.json and close the environments."""
        self.collector.close()
        wall_seconds = self.wall_seconds + session_seconds
        summary = {
            "status": status,
            "algo": self.algo.name,
            "env": self.config.env.id,
            "seed": self.config.seed,
            "env_steps": self.global_step,
            "total_timesteps": self.config.total_timesteps,
            "updates": self.updates,
            "wall_seconds": round(wall_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds + self.session_cpu_seconds(), 3),
            "sps": round(self.global_step / wall_seconds, 1) if wall_seconds > 0 else 0.0,
            "eval_episodes": int(eval_returns.size),
            "eval_return_mean": float(eval_returns.mean()) if eval_returns.size else None,
            "eval_return_std": float(eval_returns.std()) if eval_returns.size else None,
            "train_return_recent": float(np.mean(self.recent_returns)) if self.recent_returns else None,
            "target_reached": self.target_reached() if self.config.target_return is not None else None,
        }
        write_summary(self.run_dir, summary)
        return summary

    def report(self, summary: dict[str, Any], start_step: int) -> None:
        if summary["target_reached"]:
            self.console.print(
                f"[bold green]target reached[/]: the last {RECENT_EPISODES} training episodes averaged "
                f"{summary['train_return_recent']:.1f} >= {self.config.target_return:g} at env step {summary['env_steps']:,}",
                highlight=False, soft_wrap=True,
            )
        ret = summary["eval_return_mean"]
        ret_text = f"eval return {ret:.1f} ± {summary['eval_return_std']:.1f}" if ret is not None else "no evaluation"
        self.console.print(
            f"[bold green]done[/] {summary['algo']} on {summary['env']}: {ret_text} | "
            f"{summary['env_steps']:,} env steps in {summary['wall_seconds']:.1f} s ({summary['sps']:,.0f} SPS; "
            f"a rollout always completes, so a run may pass total_timesteps={self.config.total_timesteps:,}) | "
            f"run dir {self.run_dir} | tensorboard --logdir {self.run_dir / TENSORBOARD_SUBDIR}",
            highlight=False, soft_wrap=True,
        )


def policy_change(policy: ActorCritic, batch: Batch) -> dict[str, float]:
    """Where an update left the policy, over the batch's states: the exact mean
    KL(pi_old || pi_theta), pi_old as stored at collection, and the mean entropy of pi_theta."""
    with torch.no_grad():
        old = policy.distribution(batch.old_dist_params)
        new = policy.distribution(policy.actor(batch.obs))
        return {"kl": kl_divergence(old, new).mean().item(), "entropy": new.entropy().mean().item()}


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, <= 0 a useless one."""
    target_var = target.var()
    if target_var == 0:
        return math.nan
    return (1 - (target - predicted).var() / target_var).item()
