"""Checkpoints and run summaries, written atomically so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"


def _atomic_write(path: Path, write: Any) -> None:
    """Write to a temporary sibling, then rename over `path` (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    path = run_dir / CHECKPOINT_FILE
    _atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return path


def record_failure(run_dir: Path, error: Exception) -> Path:
    """Mark the run failed in summary.json, keeping whatever the summary already holds."""
    path = run_dir / SUMMARY_FILE
    summary = json.loads(path.read_text()) if path.exists() else {}
    return write_summary(run_dir, {**summary, "status": "failed", "error": str(error)})
