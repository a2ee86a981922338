"""Stopping a run cleanly: signals, and numerical faults."""

from __future__ import annotations

import math
import signal
import threading
from types import FrameType
from typing import Any

import torch

from rlrun.errors import RLRunError


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving its state; exit with 128 + `signum`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingDiverged(RLRunError):
    exit_code = 1


class StopSignals:
    """While active, the first SIGINT or SIGTERM only sets `received`, so the loop can stop
    at the next safe point; a second SIGINT raises KeyboardInterrupt at once and a second
    SIGTERM kills the process (files are written atomically, so neither corrupts them)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python allows no other
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def non_finite(policy: torch.nn.Module, stats: dict[str, float]) -> list[str]:
    """The losses and parameters that are NaN or infinite."""
    bad = [name for name, value in stats.items() if name.endswith("loss") and not math.isfinite(value)]
    names, params = zip(*policy.named_parameters())
    # One call for every parameter: its largest magnitude is finite iff all its entries are.
    with torch.no_grad():
        peaks = torch.stack(torch._foreach_norm(params, math.inf)).tolist()
    return bad + [name for name, peak in zip(names, peaks) if not math.isfinite(peak)]
