"""The batched launcher (`rlrun train -m ... hydra/launcher=batched`): a sweep's jobs whose
configs differ only in batchable values (`rlrun.grouping`) are trained together, one process
per group, by `rlrun.trainer.train_group`.

Its options and the class Hydra instantiates live in
`hydra_plugins/rlrun_batched_launcher/batched_launcher.py` (Hydra takes launchers only from
there). Every job is still an ordinary Hydra job: its own run directory, `.hydra/`, log file
and callbacks; only the training is shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import logging
import os
import signal
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra._internal.callbacks import Callbacks
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.rlrun_batched_launcher.batched_launcher import BatchedLauncherConf, Executor, SubmititConf
from rlrun import grouping
from rlrun.errors import RLRunError
from rlrun.launch import preset
from rlrun.lifecycle import RunInterrupted, StopSignals

if TYPE_CHECKING:
    from hydra_plugins.rlrun_batched_launcher.batched_launcher import BatchedLauncher
    from rlrun.trainer import Job

log = logging.getLogger(__name__)

OPTIONS = [f.name for f in dataclasses.fields(BatchedLauncherConf) if f.name != "_target_"]
NESTED = ("submitit", "ray")
SUBMITIT_OPTIONS = [f.name for f in dataclasses.fields(SubmititConf)]


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in one paragraph, an option the batched launcher does not have, a group size or
    job count below 1, and an executor whose package is missing. `rlrun.launch.check_overrides`
    checks the command line's `hydra.launcher.*` overrides here before Hydra runs anything;
    `launch` checks the composed options (a config file may set them too)."""
    for name in options:
        top, _, sub = name.partition(".")
        if top not in OPTIONS or (top == "submitit" and sub and sub.split(".")[0] not in SUBMITIT_OPTIONS):
            raise RLRunError(
                f"hydra.launcher.{name} is not an option of the batched launcher. Its options: "
                f"{', '.join(o for o in OPTIONS if o not in NESTED)}, submitit.KEY (KEY one of {', '.join(SUBMITIT_OPTIONS)}) and "
                "ray.KEY (an option of ray.remote; +hydra.launcher.ray.KEY=... adds one)."
            )
    for name in ("max_group_size", "n_jobs"):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise RLRunError(f"hydra.launcher.{name} must be a whole number of at least 1, got {value!r}.")
    if options.get("executor") is not None:
        name = _name(options["executor"])
        if name not in Executor.__members__:
            raise RLRunError(f"hydra.launcher.executor must be one of {', '.join(Executor.__members__)}, got {name!r}.")
        if name != "local":  # local needs joblib only to run groups in parallel: checked then
            _require(name, name)


def _name(executor: Executor | str) -> str:
    # By name: Hydra's plugin scan executes the module defining Executor again, a new class.
    return str(getattr(executor, "name", executor))


def _require(module: str, executor: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise RLRunError(f"hydra.launcher.executor={executor} needs {module}, which is not installed: pip install 'rlrun[{module}]'.")


class ComposedOnce:
    """Hydra's config loader, composing each job of the sweep once: Hydra's basic sweeper
    composes every job to check the batch before it launches it (composing one costs about
    0.1 s, a sizeable part of a CartPole run), and `launch` takes those configs instead of
    composing them again. Sweepers that do not check (Optuna's) leave nothing to take."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.checked: dict[tuple[str, ...], list[DictConfig]] = {}  # a list: a sweep may repeat a job

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        self.checked.setdefault(tuple(sweep_overrides), []).append(config)
        return config

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The config the sweeper composed for these overrides, once; composed anew otherwise."""
        checked = self.checked.get(tuple(sweep_overrides))
        return checked.pop(0) if checked else self.loader.load_sweep_config(master_config, sweep_overrides)

    def clear(self) -> None:
        self.checked.clear()

    def __getattr__(self, name: str) -> Any:  # everything else is the loader's
        if name == "loader":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __getstate__(self) -> dict[str, Any]:  # workers get the loader, not the configs
        return {"loader": self.loader, "checked": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def launch(launcher: BatchedLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Group the jobs, train each group in a process of the chosen executor, and return the
    jobs' results in the sweep's order."""
    config, options = launcher.config, launcher.config.hydra.launcher
    check_options({name: options[name] for name in ("max_group_size", "n_jobs", "executor")})
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    if _name(options.executor) == "local":
        _warm_up(options, len(job_overrides))
    configs = [_sweep_config(launcher, overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
    groups = grouping.group_jobs([_group_key(job) for job in configs], options.max_group_size)
    executor = _name(options.executor)
    if executor == "local":
        groups = grouping.spread(groups, _local_workers(options))
    swept = grouping.swept_values([list(overrides) for overrides in job_overrides])
    log.info(f"Batched launcher ({executor}): {grouping.describe(groups, swept)}")
    for number, group in enumerate(groups):
        jobs = ",".join(str(configs[i].hydra.job.num) for i in group)
        log.info(f"\tgroup {number}: jobs {jobs}: {grouping.group_values([swept[i] for i in group])}")
    run = {"local": _run_local, "submitit": _run_submitit, "ray": _run_ray}[executor]
    launcher.hydra_context.config_loader.clear()  # the next batch (an Optuna trial, say) is composed afresh
    outcomes = run(launcher, [[configs[i] for i in group] for group in groups])
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)  # the groups run here set up their jobs' logging
    returns: dict[int, JobReturn] = {}
    for group, outcome in zip(groups, outcomes):
        returns.update(zip(group, outcome))
    return [returns[i] for i in range(len(configs))]


def _sweep_config(launcher: BatchedLauncher, overrides: Sequence[str], num: int) -> DictConfig:
    config = launcher.hydra_context.config_loader.take(launcher.config, list(overrides))
    with open_dict(config):
        config.hydra.job.id = config.hydra.job.num = num
    return config


def _group_key(config: DictConfig) -> str:
    with _current(config):
        try:
            return grouping.group_key(config)
        except OmegaConfBaseException:  # alone, it fails when trained and says why
            return f"job {config.hydra.job.num}: does not resolve"


@contextlib.contextmanager
def _current(config: DictConfig):
    """`config`'s Hydra node as the current one, which ${hydra:...} and callbacks read."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = previous


def run_group(group: list[DictConfig], context: HydraContext, task_function: TaskFunction) -> list[JobReturn]:
    """Train one group's jobs together in this process. Hydra prepares each job as it would run
    it (run directory, .hydra/, logging) with its callbacks held back; they see the job start
    and end around the training. A stop signal checkpoints every run and raises RunInterrupted."""
    with StopSignals() as signals:  # before torch's import: a stop during start-up is clean too
        from rlrun.trainer import train_group

        if not gc.get_freeze_count():
            gc.freeze()  # as rlrun.cli._train_job does: torch's objects out of every collection, once
        quiet = HydraContext(config_loader=context.config_loader, callbacks=Callbacks())
        returns = [
            run_job(hydra_context=quiet, task_function=_prepare, config=config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            for config in group
        ]
        handlers = _log_to_each_run([Path(config.hydra.runtime.output_dir) for config in group])
        for config in group:
            with _current(config):
                context.callbacks.on_job_start(config=config, task_function=task_function)
        ready = [ret for ret in returns if ret.status == JobStatus.COMPLETED]
        try:
            results = train_group([ret.return_value for ret in ready], signals)
        except RunInterrupted:
            signals.hand_over()  # a cluster's warning: its handler requeues the job (the checkpoints are written)
            raise
        except Exception as err:  # a fault of the group ends its runs, not the sweep
            results = [err] * len(ready)
        for ret, result in zip(ready, results):
            ret.return_value = result
            ret.status = JobStatus.FAILED if isinstance(result, BaseException) else JobStatus.COMPLETED
        for config, ret in zip(group, returns):
            with _current(config):
                context.callbacks.on_job_end(config=config, job_return=ret)
        for handler in handlers:  # a reused worker trains other groups next
            logging.getLogger().removeHandler(handler)
            handler.close()
    return returns


def _prepare(cfg: DictConfig) -> Job:
    """The task Hydra runs for each job of a group: it trains nothing, it returns the job as
    `train_group` takes it."""
    from rlrun.trainer import Job

    # Now, while this job's Hydra config is the current one: ${hydra:...} (the env id, say)
    # would read another job's in train_group. A config that does not resolve fails there.
    with contextlib.suppress(OmegaConfBaseException):
        OmegaConf.resolve(cfg)
    hydra = HydraConfig.get()
    choices = hydra.runtime.choices
    chosen = {"algo": choices.algo, "env": choices.env, "preset": preset(choices.get("tuned"))}
    return Job(cfg, Path(hydra.runtime.output_dir), chosen, continue_run=True)


def _log_to_each_run(run_dirs: list[Path]) -> list[logging.Handler]:
    """Hydra pointed the log file at the job prepared last; the group's records concern all its
    runs, so each run's log file gets them. Returns the handlers added."""
    root, added = logging.getLogger(), []
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        for path in {run_dir / Path(handler.baseFilename).name for run_dir in run_dirs} - {Path(handler.baseFilename)}:
            copy = logging.FileHandler(path)
            copy.setFormatter(handler.formatter)
            copy.setLevel(handler.level)
            root.addHandler(copy)
            added.append(copy)
    return added


def _in_worker(group: list[DictConfig], context: HydraContext, task_function: TaskFunction, singleton_state: dict) -> list[JobReturn] | int:
    """`run_group` in another process, with Hydra's state as the launcher had it. A stop comes
    back as its signal number, not an exception, so that the launcher collects every group's
    outcome (each checkpointing its runs) before it stops."""
    setup_globals()
    Singleton.set_state(singleton_state)
    try:
        return run_group(group, context, task_function)
    except RunInterrupted as stop:
        return stop.signum


def _unless_stopped(outcomes: list[list[JobReturn] | int]) -> list[list[JobReturn]]:
    stops = [outcome for outcome in outcomes if isinstance(outcome, int)]
    if stops:
        raise RunInterrupted(stops[0])
    return outcomes


class _StopWorkers(StopSignals):
    """The launcher's first SIGINT or SIGTERM stops the groups: each worker gets SIGUSR2, which
    its runs take as a stop (checkpoint, then end). SIGUSR2 rather than the signal itself: a
    Ctrl-C from a terminal has reached the workers already, and a second SIGINT or SIGTERM would
    end them at once. A second signal here stops the launcher at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def _handle(self, signum: int, frame: Any) -> None:
        super()._handle(signum, frame)
        for pid in _worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)


_warm_futures: list[Any] = []  # each worker's pid, once it has started


def _worker_pids() -> set[int]:
    return {future.result() for future in _warm_futures if future.done() and future.exception() is None}


def _local_workers(options: DictConfig) -> int:
    return options.n_jobs or os.cpu_count() or 1


def _pool(options: DictConfig, num_jobs: int) -> Any:
    """joblib's loky worker processes for the local executor, or None where groups run here."""
    workers = min(_local_workers(options), num_jobs)
    if workers < 2:
        return None
    _require("joblib", "local")
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=workers)


def _warm_up(options: DictConfig, num_jobs: int) -> None:
    """Start the workers now: their imports (torch's above all) overlap the composition of the
    sweep's configs here instead of following it. Each tells its pid, for `_StopWorkers`."""
    pool = _pool(options, num_jobs)
    if pool is not None:
        _warm_futures[:] = [pool.submit(_import_trainer) for _ in range(min(_local_workers(options), num_jobs))]


def _import_trainer() -> int:
    import rlrun.trainer  # noqa: F401

    return os.getpid()


def _run_local(launcher: BatchedLauncher, groups: list[list[DictConfig]]) -> list[list[JobReturn]]:
    pool = _pool(launcher.config.hydra.launcher, sum(map(len, groups)))
    if pool is None or len(groups) == 1:
        return [run_group(group, launcher.hydra_context, launcher.task_function) for group in groups]
    state = Singleton.get_state()
    with _StopWorkers() as stop:
        futures = [pool.submit(_in_worker, group, launcher.hydra_context, launcher.task_function, state) for group in groups]
        outcomes = [future.result() for future in futures]
    if stop.received is not None and any(isinstance(outcome, int) for outcome in outcomes):
        raise RunInterrupted(stop.received)  # exit as the signal the launcher got says
    return _unless_stopped(outcomes)


class _SubmititGroup:
    """One group as a submitit job. Checkpointable: a job SLURM warns of its time limit or
    preemption is requeued (after every run's checkpoint) and continues its runs."""

    def __init__(self, context: HydraContext, task_function: TaskFunction, singleton_state: dict):
        self.context, self.task_function, self.singleton_state = context, task_function, singleton_state

    def __call__(self, group: list[DictConfig]) -> list[JobReturn]:
        setup_globals()
        Singleton.set_state(self.singleton_state)
        return run_group(group, self.context, self.task_function)

    def checkpoint(self, group: list[DictConfig]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, group)


def _run_submitit(launcher: BatchedLauncher, groups: list[list[DictConfig]]) -> list[list[JobReturn]]:
    import submitit

    parameters = OmegaConf.to_container(launcher.config.hydra.launcher.submitit, resolve=True)
    folder, cluster = parameters.pop("folder"), parameters.pop("cluster")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=parameters.pop("slurm_max_num_timeout"))
    try:
        executor.update_parameters(**parameters)
    except NameError as err:  # submitit's list of what it takes
        raise RLRunError(f"hydra.launcher.submitit: {' '.join(str(err).split())}") from None
    task = _SubmititGroup(launcher.hydra_context, launcher.task_function, Singleton.get_state())
    jobs = executor.map_array(task, groups)
    log.info(f"Submitit ({executor.cluster}) jobs {', '.join(job.job_id for job in jobs)}, logs in {folder}")
    return [_result(job.result, group, launcher.hydra_context) for job, group in zip(jobs, groups)]


def _run_ray(launcher: BatchedLauncher, groups: list[list[DictConfig]]) -> list[list[JobReturn]]:
    import ray

    if not ray.is_initialized():
        ray.init()  # the cluster at RAY_ADDRESS, else a local instance
    options = OmegaConf.to_container(launcher.config.hydra.launcher.ray, resolve=True)
    task = ray.remote(**options)(_in_worker)
    state = Singleton.get_state()
    futures = [task.remote(group, launcher.hydra_context, launcher.task_function, state) for group in groups]
    return _unless_stopped([_result(partial(ray.get, future), group, launcher.hydra_context) for future, group in zip(futures, groups)])


def _result(get: Any, group: list[DictConfig], context: HydraContext) -> list[JobReturn] | int:
    """A remote group's outcome; where its process ended without one, each of its jobs failed."""
    try:
        return get()
    except Exception as err:
        lost = RLRunError(f"The process training this job's group ended without a result: {' '.join(str(err).split())}")
    returns = [JobReturn(overrides=list(config.hydra.overrides.task), status=JobStatus.FAILED, _return_value=lost) for config in group]
    for config, ret in zip(group, returns):
        with _current(config):
            context.callbacks.on_job_end(config=config, job_return=ret)
    return returns
