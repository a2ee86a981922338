"""What a run reports: TensorBoard scalars and hparams, and its progress on the terminal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.api_pb2 import DataType
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from rlrun.config import flatten

TENSORBOARD_SUBDIR = "tb"
PLAIN_PROGRESS_SECONDS = 30.0  # without a terminal (logs, nohup, SLURM): a line this often


class RunTracker:
    """One TensorBoard event directory (`<run_dir>/tb`) and the run's progress: a rich bar on
    a terminal, plain lines (steps, SPS, recent return, KL, ETA) into a log file otherwise."""

    def __init__(self, run_dir: Path, total_steps: int, console: Console, start_step: int = 0):
        # A resumed run appends to the same event directory; purge_step hides anything an
        # earlier process logged after the checkpoint it resumes from.
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_SUBDIR), purge_step=start_step + 1 if start_step else None)
        self.console, self.total_steps, self.start_step = console, total_steps, start_step
        self.start_time = self.last_line = time.monotonic()
        self.progress = Progress(
            BarColumn(bar_width=24),
            TextColumn("{task.completed:>9,} of {task.total:,} steps"),
            TextColumn("{task.fields[sps]:>7,.0f} SPS  return {task.fields[ret]:6.1f}  kl {task.fields[kl]:.1e}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, sps=0.0, ret=float("nan"), kl=0.0)

    def __enter__(self) -> RunTracker:
        self.progress.start()
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        self.progress.stop()
        try:
            self.writer.close()  # flushes; re-raises a failure of its writer thread (a full disk)
        except OSError:
            if exc_type is None:
                raise

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log `{tag: value}` at `step` as one event: TensorBoard reads every value of an event
        as a point of its own tag, and one event costs a fraction of one event per scalar."""
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value)) for tag, value in values.items()])
        self.writer.file_writer.add_summary(summary, step)

    def advance(self, step: int, sps: float, recent_return: float, kl: float) -> None:
        self.progress.update(self.task, completed=step, sps=sps, ret=recent_return, kl=kl)
        now = time.monotonic()
        if self.progress.disable and now - self.last_line >= PLAIN_PROGRESS_SECONDS:
            self.last_line = now
            remaining = max(self.total_steps - step, 0) / sps if sps > 0 else float("nan")
            self.console.print(
                f"{step:,} of {self.total_steps:,} env steps ({100 * step / self.total_steps:.0f}%) | "
                f"{sps:,.0f} SPS | recent return {recent_return:.1f} | kl {kl:.1e} | eta {_duration(remaining)}",
                highlight=False, soft_wrap=True,
            )

    def hparams(self, config: dict[str, Any], choices: dict[str, str], metrics: dict[str, float]) -> None:
        """Record the run's hyperparameters (its config's keys and the `choices` of config
        files: algo, env, preset) beside its final metrics for the HParams dashboard.

        Written into this run's own event directory (torch's `add_hparams` would start a
        sub-run), so a sweep's runs line up one row each.
        """
        values = {key: v if isinstance(v, (bool, int, float, str)) else str(v) for key, v in {**flatten(config), **choices}.items()}
        experiment, session_start, session_end = hparams(values, metrics)
        booleans = {key for key, value in values.items() if isinstance(value, bool)}
        for summary in (_as_booleans(experiment, booleans), _as_booleans(session_start, booleans), session_end):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()


def _as_booleans(summary: Summary, keys: set[str]) -> Summary:
    """torch's `hparams` records a bool as a number (bool is an int to isinstance): mark
    `keys` as booleans in its protos, so the dashboard filters them as true/false."""
    metadata = summary.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(metadata.content)
    for info in data.experiment.hparam_infos:
        if info.name in keys:
            info.type = DataType.DATA_TYPE_BOOL
    for key in keys & set(data.session_start_info.hparams):
        data.session_start_info.hparams[key].bool_value = bool(data.session_start_info.hparams[key].number_value)
    metadata.content = data.SerializeToString()
    return summary


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: no speed measured yet
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
