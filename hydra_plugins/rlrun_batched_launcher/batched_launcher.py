"""`hydra/launcher=batched`: rlrun's launcher that trains a sweep's jobs in groups, one process
per group (README, "Batched sweeps").

Hydra instantiates launchers only from the `hydra_plugins` namespace, and imports every module
there at start-up, in any Hydra application: this module holds only the options and the class
Hydra calls; the work is done in `rlrun.batched_launcher`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class Executor(Enum):
    local = "local"  # processes on this machine (joblib's loky), n_jobs groups at a time
    submitit = "submitit"  # one submitit job per group: SLURM, or local processes
    ray = "ray"  # one Ray task per group, on the cluster at RAY_ADDRESS or a local Ray instance


@dataclass
class SubmititConf:
    """executor=submitit: submitit.AutoExecutor's own parameter names; null leaves one unset."""

    cluster: Optional[str] = None  # null: slurm where SLURM is available, else local
    folder: str = "${hydra.sweep.dir}/.submitit/%j"  # job scripts, pickles and logs
    name: str = "rlrun"  # the job name the cluster shows
    timeout_min: int = 120  # a group trains all its runs: give it the time of its longest run
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None
    gpus_per_node: Optional[int] = None
    slurm_partition: Optional[str] = None
    # SLURM signals SIGUSR2 this many seconds before the time limit: every run of the group
    # checkpoints and the job is requeued (up to slurm_max_num_timeout times) to continue them.
    slurm_signal_delay_s: int = 120
    slurm_max_num_timeout: int = 20
    slurm_array_parallelism: int = 64  # groups running at once
    slurm_setup: list[str] = field(default_factory=list)  # shell lines run before the job, e.g. module load
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {qos: high}


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.rlrun_batched_launcher.batched_launcher.BatchedLauncher"
    # Most jobs one process trains together; a larger group of batchable jobs is split.
    max_group_size: int = 64
    # executor=local: groups trained at the same time; null: one per CPU. Never more than groups.
    n_jobs: Optional[int] = None
    executor: Executor = Executor.local
    submitit: SubmititConf = field(default_factory=SubmititConf)
    # executor=ray: options of each group's task, as ray.remote takes them
    # (+hydra.launcher.ray.memory=..., runtime_env, resources...).
    ray: dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1})


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="rlrun")


class BatchedLauncher(Launcher):
    def __init__(self, **options: Any) -> None:
        # rlrun.batched_launcher reads the options from config.hydra.launcher, where
        # ${hydra.sweep.dir} resolves.
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from rlrun.batched_launcher import ComposedOnce

        # The sweeper shares this context: its check of every job's config and the grouping here
        # then compose each job once between them.
        hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rlrun.batched_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
