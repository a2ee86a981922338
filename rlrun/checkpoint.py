"""Checkpoints and run summaries, written atomically so a crash never leaves half a file.

The previous checkpoint is kept beside the newest one (`checkpoint.prev.pt`): a damaged
newest file falls back to it with a warning instead of losing the run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from rlrun.errors import RLRunError

CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
SUMMARY_FILE = "summary.json"

log = logging.getLogger(__name__)


def _write_temp(path: Path, write: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    return tmp


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write the new checkpoint, then move it over the old one, which becomes the previous."""
    path = run_dir / CHECKPOINT_FILE
    tmp = _write_temp(path, lambda tmp: torch.save(state, tmp))
    if path.exists():
        os.replace(path, run_dir / PREVIOUS_CHECKPOINT_FILE)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The newest readable checkpoint of `run_dir`; a clear error if there is none."""
    problems = []
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = run_dir / name
        if not path.exists():
            problems.append(f"{path} does not exist")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # a truncated or foreign file fails in many ways
            problems.append(f"{path} is unreadable ({type(err).__name__}: {err})")
            log.warning("checkpoint %s is unreadable, trying the previous one", path)
            continue
        if problems:
            log.warning("using %s: %s", path, "; ".join(problems))
        return state
    raise RLRunError(f"No usable checkpoint in {run_dir}: {'; '.join(problems)}.")


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    os.replace(_write_temp(path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n")), path)
    return path


def record_failure(run_dir: Path, error: Exception) -> Path:
    """Mark the run failed in summary.json, keeping whatever the summary already holds."""
    path = run_dir / SUMMARY_FILE
    summary = json.loads(path.read_text()) if path.exists() else {}
    return write_summary(run_dir, {**summary, "status": "failed", "error": str(error)})
