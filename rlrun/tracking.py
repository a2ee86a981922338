"""What a run reports: TensorBoard scalars and hparams, and a rich progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

TENSORBOARD_SUBDIR = "tb"


class RunTracker:
    """One TensorBoard event directory (`<run_dir>/tb`) and the terminal progress bar."""

    def __init__(self, run_dir: Path, total_steps: int, console: Console):
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_SUBDIR))
        self.progress = Progress(
            BarColumn(bar_width=24),
            TextColumn("{task.completed:>9,}/{task.total:,} steps"),
            TextColumn("{task.fields[sps]:>7,.0f} SPS  return {task.fields[ret]:6.1f}  kl {task.fields[kl]:.1e}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, sps=0.0, ret=float("nan"), kl=0.0)

    def __enter__(self) -> RunTracker:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.progress.stop()
        self.writer.close()

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def advance(self, step: int, sps: float, recent_return: float, kl: float) -> None:
        self.progress.update(self.task, completed=step, sps=sps, ret=recent_return, kl=kl)

    def hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's hyperparameters beside its final metrics for the HParams dashboard.

        Written into this run's own event directory (torch's `add_hparams` would start a
        sub-run), so a sweep's runs line up one row each.
        """
        experiment, session_start, session_end = hparams(_flatten(config), metrics)
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algo": {"lr": 1e-3}} -> {"algo.lr": 1e-3}; lists and None become strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
