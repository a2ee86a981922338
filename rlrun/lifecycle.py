"""Stopping a run cleanly: signals, and numerical faults."""

from __future__ import annotations

import errno
import fcntl
import math
import os
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rlrun.errors import RLRunError

if TYPE_CHECKING:
    import torch


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving its state; exit with 128 + `signum`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple[type, tuple[int]]:  # crosses process boundaries (launchers' workers)
        return (RunInterrupted, (self.signum,))


class TrainingDiverged(RLRunError):
    exit_code = 1


class DiskFull(RLRunError):
    """The run's disk filled up: stop, say what is kept, and let `resume` continue later."""

    exit_code = 1

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        steps = sorted(_checkpoint_steps(run_dir))
        kept = (
            f"its newest complete checkpoint (env step {steps[-1]:,}) is kept, and `rlrun train "
            f"resume={run_dir}` continues from it once there is room"
            if steps else "no checkpoint had been written yet"
        )
        free = shutil.disk_usage(run_dir).free if run_dir.exists() else 0
        super().__init__(
            f"The disk holding {run_dir} is full ({free:,} bytes free): the run stopped, and what it "
            f"could not write is lost; {kept}. No temporary files are left behind."
        )

    def __reduce__(self) -> tuple[type, tuple[Path]]:  # crosses process boundaries (launchers' workers)
        return (DiskFull, (self.run_dir,))


def disk_full(error: BaseException) -> bool:
    """Whether `error` (or what it wraps: torch.save turns the OSError into a RuntimeError)
    says the disk is full."""
    while error is not None:
        if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _checkpoint_steps(run_dir: Path) -> list[int]:
    from rlrun.checkpoint import has_checkpoint, load_checkpoint

    if not has_checkpoint(run_dir):
        return []
    try:
        return [load_checkpoint(run_dir)["global_step"]]
    except RLRunError:
        return []


class StopSignals:
    """While active, the first SIGINT, SIGTERM or SIGUSR2 only sets `received`, so the loop can
    stop at the next safe point; a second SIGINT raises KeyboardInterrupt at once and a second
    SIGTERM kills the process (files are written atomically, so neither corrupts them).

    SIGUSR2 is the warning a cluster sends before a time limit or preemption (SLURM's
    `--signal`, submitit's `signal_delay_s`): once the checkpoint is written, `hand_over`
    passes it to the handler that was there before (submitit's, which requeues the job).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python allows no other
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:  # the first signal says why the run stops
            self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def hand_over(self) -> None:
        """Run the earlier handler of the signal received, if it was a Python function."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.received, None)


def non_finite(params: dict[str, torch.Tensor], stats: dict[str, float]) -> list[str]:
    """The losses and parameters (`params`: name -> tensor) that are NaN or infinite."""
    import torch  # here: the CLI imports this module for its signal handling before torch loads
    bad = [name for name, value in stats.items() if name.endswith("loss") and not math.isfinite(value)]
    # One check of every weight at once (copying them into one vector costs less than a
    # reduction per parameter); the names are looked up only when something is wrong.
    with torch.no_grad():
        if not params or torch.cat([param.reshape(-1) for param in params.values()]).isfinite().all():
            return bad
        return bad + [name for name, param in params.items() if not param.isfinite().all()]


class RunLock:
    """An exclusive OS lock on a run directory while a process trains in it (released by the OS
    on any exit, even SIGKILL): a second writer is refused instead of interleaving files."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RLRunError(
                f"Another rlrun process (PID {holder}) is training in {self.path.parent}; two writers "
                "would interleave its checkpoints and curves. Wait for it to finish or stop it first."
            ) from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.file.close()  # releases the lock
