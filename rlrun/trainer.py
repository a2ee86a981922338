"""The generic on-policy loop: act, store, estimate advantages, update, log, checkpoint.

Every algorithm runs through this one loop; `rlrun.algos` supply only their advantage
estimator and update rule (the contract is in `rlrun/algos/base.py`), `Collector` the acting.
The loop trains a group of runs side by side in one process (a batched sweep, see
rlrun/grouping.py); a single run is a group of one. Each run keeps its own environments,
random streams, bookkeeping, evaluation and run directory, and ends on its own: when it has
its steps or its target, or when it fails.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch.distributions import Distribution

from rlrun.algos import algorithm_class
from rlrun.checkpoint import (
    check_resumable, has_checkpoint, load_checkpoint, load_env_snapshot, read_summary, record_failure, save_checkpoint, write_summary,
)
from rlrun.collector import Collector, Episodes
from rlrun.compiling import should_compile
from rlrun.config import Config, to_object
from rlrun.envs import max_episode_steps
from rlrun.errors import RLRunError
from rlrun.evaluation import EVAL_SEED_OFFSET, evaluate
from rlrun.grouping import group_key
from rlrun.lifecycle import DiskFull, RunInterrupted, RunLock, StopSignals, TrainingDiverged, disk_full, non_finite
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch, Rollout, masked_mean
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
    [result] = train_group([Job(cfg, Path(run_dir), choices, continue_run)], signals)
    if isinstance(result, Exception):
        raise result
    return result


def train_group(jobs: list[Job], signals: StopSignals | None = None) -> list[float | Exception]:
    """Train `jobs` together in this process; per job, its final evaluation return or the
    error (an `RLRunError`) that ended it, recorded in its run directory too. A stop signal
    checkpoints every run and raises `RunInterrupted`. The jobs' configs must differ only in
    batchable keys (`rlrun.grouping`)."""
    results: list[float | Exception | None] = [None] * len(jobs)
    with ExitStack() as stack:
        signals = signals or stack.enter_context(StopSignals())
        runs = []
        for index, job in enumerate(jobs):
            try:
                runs.append(_prepare(job, index, stack))
            except RLRunError as err:
                results[index] = err
            except OSError as err:
                if not disk_full(err):
                    raise
                results[index] = DiskFull(job.run_dir)
        if len(runs) > 1:
            _check_one_group([jobs[run.index].cfg for run in runs])
        try:
            if runs:
                Trainer(runs).run(signals)
        except Exception as err:  # a fault of the whole group: each run still going fails with it
            for run in runs:
                if run.active:
                    run.fail(err)
        for run in runs:
            results[run.index] = run.result
    return results


def _prepare(job: Job, index: int, stack: ExitStack) -> Run:
    """The job's validated configuration, its locked run directory and the checkpoint it
    continues from, if any."""
    try:
        config = to_object(job.cfg)
    except RLRunError as err:
        if not job.cfg.get("resume"):  # a refused resume leaves its run as it was
            record_failure(job.run_dir, err)
        raise
    resolved = OmegaConf.to_container(job.cfg, resolve=True, enum_to_str=True)
    resolved.pop("hydra", None)
    stack.enter_context(RunLock(job.run_dir))
    # A refused resume leaves the run it names exactly as it was.
    resume_dir = Path(config.resume) if config.resume else job.run_dir if job.continue_run and has_checkpoint(job.run_dir) else None
    checkpoint = _checkpoint_to_resume(resume_dir, resolved) if resume_dir else None
    if checkpoint is None:
        (job.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    return Run(index, config, resolved, job.run_dir, job.choices or {}, checkpoint)


def _check_one_group(cfgs: list[DictConfig]) -> None:
    if len({group_key(cfg) for cfg in cfgs}) > 1:
        raise ValueError("train_group got runs whose configs differ in keys that cannot be batched; group them with rlrun.grouping")


def _checkpoint_to_resume(run_dir: Path, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue from, checked against the configuration; None (start afresh
    with the same configuration) for a run that was stopped before its first checkpoint."""
    if not has_checkpoint(run_dir):
        Console(stderr=True).print(f"{run_dir} has no checkpoint yet: training it from the start with its configuration", highlight=False)
        return None
    checkpoint = load_checkpoint(run_dir)
    check_resumable(run_dir, checkpoint["config"], resolved)
    return checkpoint


class Run:
    """One run of a group: its configuration, run directory, random stream and bookkeeping."""

    def __init__(self, index: int, config: Config, resolved_config: dict[str, Any], run_dir: Path, choices: dict[str, str], checkpoint: dict[str, Any] | None):
        self.index = index  # in the group's jobs
        self.config, self.resolved_config, self.run_dir, self.choices = config, resolved_config, run_dir, choices
        self.checkpoint = checkpoint  # to continue from, loaded once the group is built
        # Every random draw of the run (initial weights, actions, minibatches) comes from here.
        self.generator = torch.Generator().manual_seed(config.seed)
        self.global_step = 0  # real transitions collected (reset steps do not count)
        self.updates = 0
        self.wall_seconds = 0.0  # of earlier processes, when resumed
        self.cpu_seconds = 0.0  # likewise: the compute a run cost, whatever the machine's load
        self.next_eval_step = config.eval_interval
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.checkpoint_step: int | None = None  # env step of the newest checkpoint on disk
        self.start_step = 0
        self.tracker: RunTracker | None = None
        self.result: float | Exception | None = None
        self.status = "running"  # then completed, failed or interrupted, as in summary.json

    def target_reached(self) -> bool:
        target = self.config.target_return
        return target is not None and len(self.recent_returns) == RECENT_EPISODES and bool(np.mean(self.recent_returns) >= target)

    def done(self) -> bool:
        return self.global_step >= self.config.total_timesteps or self.target_reached()

    def evaluation_due(self) -> bool:
        return bool(self.config.eval_interval) and self.global_step >= self.next_eval_step and not self.done()

    def schedule_next_evaluation(self) -> None:
        self.next_eval_step = (self.global_step // self.config.eval_interval + 1) * self.config.eval_interval

    @property
    def active(self) -> bool:
        return self.status == "running"

    def fail(self, error: Exception) -> None:
        """End the run, before its training started, as failed: `error` recorded in its
        summary (everything else kept)."""
        self.status = "failed"
        self.result = error
        record_failure(self.run_dir, error)


class Trainer:
    """A group of runs: their collector, the policy and algorithm they share (each run its own
    slice of every parameter), the rollout storage, and the loop."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        first = runs[0].config
        self.console = Console()
        torch.set_num_threads(first.torch_threads)
        Distribution.set_default_validate_args(False)  # argument checks cost more than the math
        self.generators = [run.generator for run in runs]

        algo_class = algorithm_class(first.algo)
        self.collector = Collector(
            [run.config.env for run in runs], [algo_class.discount(run.config.algo) for run in runs],
            algo_class.whole_episodes, seeds=[run.config.seed for run in runs],
        )
        envs = self.collector.envs[0]
        self.policy = ActorCritic(
            envs.single_observation_space, envs.single_action_space, first.policy,
            algo_class.needs_critic(first.algo), self.generators,
        )
        self.algo = algo_class([run.config.algo for run in runs], self.policy, self.generators)
        gradient_steps = algo_class.gradient_steps(first.algo, first.env.num_envs, first.total_timesteps)
        # Only algorithms that take minibatch steps (PPO) have a step to compile.
        self.compiled = gradient_steps is not None and should_compile(first.torch_compile, gradient_steps)
        if self.compiled:
            self.algo.compile()
        head = self.policy.head
        # Whole episodes need room for the longest one; fixed rollouts have a set length.
        steps = algo_class.rollout_steps(first.algo) or max_episode_steps(first.env)
        self.rollout = Rollout(
            len(runs), steps, first.env.num_envs, envs.single_observation_space.shape,
            head.action_shape, head.action_dtype, head.num_params,
        )
        for i, run in enumerate(runs):
            if run.checkpoint is not None:
                try:
                    self.load_state_dict(i, run.checkpoint, load_env_snapshot(run.run_dir, run.checkpoint["global_step"]))
                except RLRunError as err:  # this run cannot continue; the group's others can
                    run.fail(err)
                run.checkpoint = None  # loaded: its tensors need not stay in memory
        self.session_start_cpu = time.process_time()

    def state_dict(self, i: int) -> dict[str, Any]:
        """Everything run `i` needs to continue where it is now, as tensors and plain data."""
        run = self.runs[i]
        return {
            "config": run.resolved_config,
            "global_step": run.global_step,
            "updates": run.updates,
            "wall_seconds": run.wall_seconds,
            "cpu_seconds": run.cpu_seconds + self.session_cpu_seconds(),
            "next_eval_step": run.next_eval_step,
            "recent_returns": list(run.recent_returns),
            "policy": self.policy.run_state_dict(i),
            "algo": self.algo.state_dict(i),
            "torch_rng": run.generator.get_state(),
            "collector": self.collector.state_dict(i),
        }

    def load_state_dict(self, i: int, state: dict[str, Any], env_snapshot: bytes | None = None) -> None:
        run = self.runs[i]
        try:
            run.global_step, run.updates = state["global_step"], state["updates"]
            run.wall_seconds, run.next_eval_step = state["wall_seconds"], state["next_eval_step"]
            run.cpu_seconds = state["cpu_seconds"]
            run.recent_returns.extend(state["recent_returns"])
            self.policy.load_run_state_dict(i, state["policy"])
            self.algo.load_state_dict(i, state["algo"])
            run.generator.set_state(state["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise RLRunError(f"The checkpoint of {run.run_dir} does not fit this run ({type(err).__name__}: {err}).") from None
        # Without the exact environments, fresh episodes seeded from the step count.
        self.collector.load_state_dict(i, state["collector"], env_snapshot, seed=run.config.seed + run.global_step)
        run.checkpoint_step = run.start_step = run.global_step
        log.info("%s: resumed from env step %d (update %d)%s", run.run_dir, run.global_step, run.updates, "" if env_snapshot else " with fresh episodes")

    def run(self, signals: StopSignals) -> None:
        """Train until every run has ended; on a stop signal checkpoint the runs still going
        and raise `RunInterrupted`. A fault of the group (a full disk, a bug) ends the runs
        still going as failed, each with the error as its result, and is raised."""
        self.start_time = time.perf_counter()
        with ExitStack() as trackers:  # on an error their files close without masking it
            self.loop(signals, trackers)
        if signals.received is not None:
            for run in self.runs:
                if run.status == "interrupted":
                    self.console.print(
                        f"[bold yellow]interrupted[/] at env step {run.global_step:,}: checkpoint and summary saved in "
                        f"{run.run_dir}; continue with: rlrun train resume={run.run_dir}", highlight=False, soft_wrap=True,
                    )
            raise RunInterrupted(signals.received)

    def loop(self, signals: StopSignals, trackers: ExitStack) -> None:
        try:
            for i in self.active_indices():
                self.start(i, trackers)
            while signals.received is None and any(run.active for run in self.runs):
                self.train_one_update()
            for i in self.active_indices():  # stopped by a signal
                self.save(i)
                self.finish(i, "interrupted")
        except KeyboardInterrupt:  # a second Ctrl-C: keep the last checkpoints as they are
            for i in self.active_indices():
                self.finish(i, "interrupted")
            raise
        except Exception as err:
            for i in self.active_indices():
                self.finish(i, "failed", error=DiskFull(self.runs[i].run_dir) if disk_full(err) else err)
            raise

    def active_indices(self) -> list[int]:
        return [i for i, run in enumerate(self.runs) if run.active]

    def start(self, i: int, trackers: ExitStack) -> None:
        """Say that this process trains run `i`, and open its TensorBoard writer; a run with
        nothing left to train goes straight to its final evaluation."""
        run = self.runs[i]
        summary = {**read_summary(run.run_dir), "status": "running", "pid": os.getpid(), "host": socket.gethostname()}
        summary.update(algo=self.algo.name, env=run.config.env.id, seed=run.config.seed, group_size=len(self.runs))
        write_summary(run.run_dir, summary)
        self.announce(run)
        # One progress bar for the group, its first run's: the runs step together, though one
        # may end before the others (a target reached, a divergence), and its bar with it.
        console = self.console if i == self.active_indices()[0] else Console(quiet=True)
        run.tracker = trackers.enter_context(RunTracker(run.run_dir, run.config.total_timesteps, console, run.start_step))
        if run.done():
            self.complete([i])

    def announce(self, run: Run) -> None:
        config, done = run.config, run.global_step
        if done >= config.total_timesteps:
            what = f"nothing to train: {done:,} of {config.total_timesteps:,} env steps already done (give total_timesteps=N to train longer); evaluating"
        else:
            what = f"training {self.algo.name} on {config.env.id}" + (f" from env step {done:,}" if done else "") + f" to {config.total_timesteps:,} env steps"
        if len(self.runs) > 1:
            what += f" (seed {config.seed}, one of {len(self.runs)} runs trained together)"
        if self.compiled:
            what += " (PPO's minibatch step compiled with torch.compile: the first update waits for it; torch_compile=false to skip)"
        preset = run.choices.get("preset")
        if preset and preset != "none":
            what += f" with the preset {preset}"
        self.console.print(f"{what} | run dir {run.run_dir}", highlight=False, soft_wrap=True)

    def train_one_update(self) -> None:
        active = np.array([run.active for run in self.runs])
        progress = torch.tensor([run.global_step / run.config.total_timesteps for run in self.runs])
        lrs = self.algo.learning_rate(progress)
        self.algo.set_learning_rate(lrs)
        self.algo.active = torch.from_numpy(active)
        episodes = self.collector.collect(self.policy, self.rollout, active, self.generators)
        stats = self.update()
        stats["learning_rate"] = lrs
        per_run = {key: value.tolist() for key, value in stats.items()}  # one conversion per key, not per run
        for i in np.flatnonzero(active):
            self.after_update(i, episodes[i], {key: values[i] for key, values in per_run.items()})
        due = [i for i in self.active_indices() if self.runs[i].evaluation_due()]
        self.evaluate_and_log(due)
        for i in due:
            self.runs[i].schedule_next_evaluation()
        self.complete([i for i in self.active_indices() if self.runs[i].done()])
        for i in self.active_indices():
            interval = self.runs[i].config.checkpoint_interval
            if interval and self.runs[i].updates % interval == 0:
                self.save(i)

    def update(self) -> dict[str, torch.Tensor]:
        advantages, returns = self.algo.advantages(self.rollout)
        batch = self.rollout.batch(advantages, returns)
        stats = self.algo.update(batch)
        stats.update(policy_change(self.policy, batch))
        self.algo.after_update(stats)
        if self.policy.critic is not None:
            stats["explained_variance"] = explained_variance(batch.old_values, batch.returns, batch.mask)
        return stats

    def after_update(self, i: int, episodes: Episodes, stats: dict[str, float]) -> None:
        """Run `i`'s bookkeeping after an update: count, check for divergence, log."""
        run = self.runs[i]
        run.global_step += episodes.steps
        run.recent_returns.extend(episodes.returns)
        run.updates += 1
        bad = non_finite(self.run_parameters(i), stats)
        if bad:
            self.finish(i, "failed", error=self.diverged(run, bad))
            return
        sps = (run.global_step - run.start_step) / (time.perf_counter() - self.start_time)
        scalars = {f"train/{key}": value for key, value in stats.items()}
        scalars["perf/sps"] = sps
        if episodes.returns:
            scalars["rollout/episodic_return"] = float(np.mean(episodes.returns))
            scalars["rollout/episodic_length"] = float(np.mean(episodes.lengths))
        recent = float(np.mean(run.recent_returns)) if run.recent_returns else math.nan
        if run.recent_returns:
            scalars["rollout/recent_return"] = recent
        run.tracker.scalars(scalars, run.global_step)
        run.tracker.advance(run.global_step, sps, recent, stats["kl"])

    def run_parameters(self, i: int) -> dict[str, torch.Tensor]:
        return {name: param[i] for name, param in self.policy.named_parameters()}

    def diverged(self, run: Run, bad: list[str]) -> TrainingDiverged:
        kept = (
            f"the last good checkpoint (env step {run.checkpoint_step}) is kept"
            if run.checkpoint_step is not None else "no checkpoint had been written yet"
        )
        return TrainingDiverged(
            f"Training diverged at update {run.updates} (env step {run.global_step}): non-finite "
            f"{', '.join(bad[:5])}; {kept}. A smaller algo.lr or algo.max_grad_norm usually helps."
        )

    def complete(self, indices: list[int]) -> None:
        """These runs have their steps or their target: final evaluation, checkpoint, summary, report."""
        eval_returns = self.evaluate_and_log(indices)
        for i in indices:
            run = self.runs[i]
            self.save(i)
            summary = self.finish(i, "completed", eval_returns.get(i))
            run.tracker.hparams(run.resolved_config, run.choices, {"eval/episodic_return": summary["eval_return_mean"]})
            run.result = summary["eval_return_mean"]
            self.report(run, summary)

    def evaluate_and_log(self, indices: list[int]) -> dict[int, np.ndarray]:
        """Evaluate these runs, side by side; their returns by run index."""
        config = self.runs[0].config  # eval_episodes and the env are the same in every run of a group
        if not indices or config.eval_episodes == 0:
            return {}
        returns = evaluate(
            self.policy, config.env, config.eval_episodes,
            seeds={i: self.runs[i].config.seed + EVAL_SEED_OFFSET for i in indices},
            obs_stats={i: self.collector.obs_stats(i) for i in indices},
        )
        for i, run_returns in returns.items():
            run = self.runs[i]
            run.tracker.scalars({"eval/episodic_return": float(run_returns.mean())}, run.global_step)
            log.info("%s step %d: eval return %.1f +- %.1f", run.run_dir, run.global_step, run_returns.mean(), run_returns.std())
        return returns

    def save(self, i: int) -> None:
        """Checkpoint run `i`, unless it is not finite (keep the last good one)."""
        run = self.runs[i]
        if not non_finite(self.run_parameters(i), {}):
            state = {**self.state_dict(i), "wall_seconds": run.wall_seconds + time.perf_counter() - self.start_time}
            save_checkpoint(run.run_dir, state, self.collector.snapshot(i))
            run.checkpoint_step = run.global_step

    def session_cpu_seconds(self) -> float:
        """This process's CPU time since the group started (all its threads), shared evenly
        among the group's runs."""
        return (time.process_time() - self.session_start_cpu) / len(self.runs)

    def finish(self, i: int, status: str, eval_returns: np.ndarray | None = None, error: Exception | None = None) -> dict[str, Any]:
        """Write run `i`'s summary.json (with the `error` that failed it) and close its
        environments; it takes no further part. A failure to write is left to the caller's
        error: the run has ended either way."""
        run = self.runs[i]
        run.status = status
        if error is not None:
            run.result = error
        eval_returns = np.array([]) if eval_returns is None else eval_returns
        self.collector.close(i)
        wall_seconds = run.wall_seconds + time.perf_counter() - self.start_time
        summary = {
            "status": status,
            "algo": self.algo.name,
            "env": run.config.env.id,
            "seed": run.config.seed,
            "env_steps": run.global_step,
            "total_timesteps": run.config.total_timesteps,
            "updates": run.updates,
            "group_size": len(self.runs),
            "compiled": self.compiled,
            "wall_seconds": round(wall_seconds, 3),
            "cpu_seconds": round(run.cpu_seconds + self.session_cpu_seconds(), 3),
            "sps": round(run.global_step / wall_seconds, 1) if wall_seconds > 0 else 0.0,
            "eval_episodes": int(eval_returns.size),
            "eval_return_mean": float(eval_returns.mean()) if eval_returns.size else None,
            "eval_return_std": float(eval_returns.std()) if eval_returns.size else None,
            "train_return_recent": float(np.mean(run.recent_returns)) if run.recent_returns else None,
            "target_reached": run.target_reached() if run.config.target_return is not None else None,
        }
        if error is not None:
            summary["error"] = str(error)
        try:
            write_summary(run.run_dir, summary)
        except OSError:
            if error is None:
                raise
        return summary

    def report(self, run: Run, summary: dict[str, Any]) -> None:
        if summary["target_reached"]:
            self.console.print(
                f"[bold green]target reached[/]: the last {RECENT_EPISODES} training episodes averaged "
                f"{summary['train_return_recent']:.1f} >= {run.config.target_return:g} at env step {summary['env_steps']:,}",
                highlight=False, soft_wrap=True,
            )
        ret = summary["eval_return_mean"]
        ret_text = f"eval return {ret:.1f} ± {summary['eval_return_std']:.1f}" if ret is not None else "no evaluation"
        self.console.print(
            f"[bold green]done[/] {summary['algo']} on {summary['env']}: {ret_text} | "
            f"{summary['env_steps']:,} env steps in {summary['wall_seconds']:.1f} s ({summary['sps']:,.0f} SPS; "
            f"a rollout always completes, so a run may pass total_timesteps={run.config.total_timesteps:,}) | "
            f"run dir {run.run_dir} | tensorboard --logdir {run.run_dir / TENSORBOARD_SUBDIR}",
            highlight=False, soft_wrap=True,
        )


def policy_change(policy: ActorCritic, batch: Batch) -> dict[str, torch.Tensor]:
    """Where an update left the policy, over each run's batch states: the exact mean
    KL(pi_old || pi_theta), pi_old as stored at collection, and the mean entropy of pi_theta, (R,)."""
    with torch.no_grad():
        dist_params = policy.actor(batch.obs)
        return {"kl": batch.mean(policy.head.kl(batch.old_dist_params, dist_params)), "entropy": batch.mean(policy.head.entropy(dist_params))}


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target] per run over its real transitions, (R,):
    1 is a perfect critic, <= 0 a useless one (NaN where the targets do not vary)."""

    def variance(x: torch.Tensor) -> torch.Tensor:
        return masked_mean((x - masked_mean(x, mask, 1, keepdim=True)).pow(2), mask, 1)

    target_var = variance(target)
    return torch.where(target_var == 0, math.nan, 1 - variance(target - predicted) / target_var)
