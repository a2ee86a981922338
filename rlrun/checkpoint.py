"""Checkpoints and run summaries: data only, written atomically, checked before use.

A checkpoint (`checkpoint.pt`) holds tensors and plain Python values only and is loaded with
`torch.load(weights_only=True)`, so opening someone else's run executes nothing. The one thing
that is not data, the classic-control environments pickled mid-episode (resuming them
continues a run bit for bit), lives in `envs.snapshot`, signed with a key private to this
user on this machine (`~/.config/rlrun/snapshot.key`): only `resume` reads it, and only when
the signature shows this user's rlrun wrote it; otherwise the resumed run starts fresh
episodes. The previous checkpoint is kept beside the newest (`checkpoint.prev.pt`): a damaged
newest file falls back to it with a warning instead of losing the run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from rlrun.config import flatten
from rlrun.errors import RLRunError

CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
SNAPSHOT_FILE = "envs.snapshot"
SUMMARY_FILE = "summary.json"
FORMAT_VERSION = 2  # 1: pickled objects (rlrun before 2026-12); 2: data only
REQUIRED_KEYS = {"format_version", "config", "global_step", "updates", "policy", "algo", "collector", "torch_rng"}
# What a resumed run may change: how long it trains, and how (not what) it computes.
# env.solved_return: a threshold for reading results, which runs saved before it existed lack.
RESUMABLE_CHANGES = {"resume", "total_timesteps", "torch_compile", "env.solved_return"}

log = logging.getLogger(__name__)
_umask = os.umask(0)
os.umask(_umask)
FILE_MODE = 0o666 & ~_umask


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """`write` a uniquely named temporary file beside `path`, then rename it into place: a crash
    or a full disk leaves the old `path` whole and no temporary file behind."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)  # mkstemp makes it private; a run's files are as shareable as any
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, state: dict[str, Any], env_snapshot: bytes | None) -> None:
    """Write the environments' snapshot (if any), then the checkpoint; the old checkpoint
    becomes the previous one."""
    state = {**state, "format_version": FORMAT_VERSION}
    if env_snapshot is not None:
        atomic_write(run_dir / SNAPSHOT_FILE, lambda tmp: tmp.write_bytes(_sign(state["global_step"], env_snapshot)))
    path = run_dir / CHECKPOINT_FILE

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        if path.exists():
            os.replace(path, run_dir / PREVIOUS_CHECKPOINT_FILE)

    atomic_write(path, write)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds a checkpoint file (readable or not) to continue from."""
    return any((run_dir / name).exists() for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE))


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The newest readable checkpoint of `run_dir`; a clear error if there is none, or if a
    file is not a data-only rlrun checkpoint."""
    problems = []
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = run_dir / name
        if not path.exists():
            problems.append(f"{path} does not exist")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "Unsupported global" in str(err) or "Unsupported operand" in str(err):
                raise RLRunError(
                    f"Refusing to open {path}: it holds Python objects, not just data, so loading it "
                    "could run code. rlrun's checkpoints are data only; this one was written by an "
                    "earlier rlrun (before checkpoint format 2) or by another program. Nothing was loaded."
                ) from None
            problems.append(f"{path} is unreadable ({err})")
            continue
        except Exception as err:  # a truncated or foreign file fails in many ways
            problems.append(f"{path} is unreadable ({type(err).__name__}: {err})")
            continue
        _check_format(path, state)
        if problems:  # on the terminal too: a run's log file is not where people look
            message = f"using {path}: {'; '.join(problems)}"
            log.warning(message)
            Console(stderr=True).print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return state
    raise RLRunError(f"No usable checkpoint in {run_dir}: {'; '.join(problems)}.")


def _check_format(path: Path, state: Any) -> None:
    if not isinstance(state, dict) or not REQUIRED_KEYS <= state.keys():
        missing = sorted(REQUIRED_KEYS - state.keys()) if isinstance(state, dict) else ["everything"]
        raise RLRunError(f"{path} is not an rlrun checkpoint of this version (missing: {', '.join(missing)}).")
    if state["format_version"] != FORMAT_VERSION:
        raise RLRunError(
            f"{path} has checkpoint format {state['format_version']}; this rlrun reads format {FORMAT_VERSION}."
        )


def check_resumable(run_dir: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to resume with a configuration other than the saved one, but for RESUMABLE_CHANGES."""
    saved_flat, now_flat = flatten(saved), flatten(now)
    changed = sorted(
        key for key in saved_flat.keys() | now_flat.keys()
        if saved_flat.get(key) != now_flat.get(key) and key not in RESUMABLE_CHANGES
    )
    if changed:
        raise RLRunError(
            f"Cannot resume {run_dir}: a resumed run continues its saved configuration "
            f"and may only change total_timesteps and torch_compile, but these differ: {', '.join(changed)}."
        )


def load_env_snapshot(run_dir: Path, global_step: int) -> bytes | None:
    """The pickled environments saved with the checkpoint at `global_step`, if this user's
    rlrun wrote them; None (fresh episodes) otherwise, with a warning saying why."""
    path = run_dir / SNAPSHOT_FILE
    if not path.exists():
        return None
    data = path.read_bytes()
    digest, step, payload = data[:32], int.from_bytes(data[32:40], "little"), data[40:]
    if not hmac.compare_digest(digest, _digest(data[32:])):
        log.warning("%s was not written by this user's rlrun on this machine: not unpickled; fresh episodes", path)
        return None
    if step != global_step:
        log.warning("%s is from env step %d, the checkpoint from %d: fresh episodes", path, step, global_step)
        return None
    return payload


def _sign(global_step: int, payload: bytes) -> bytes:
    body = global_step.to_bytes(8, "little") + payload
    return _digest(body) + body


def _digest(body: bytes) -> bytes:
    return hmac.new(_snapshot_key(), body, hashlib.sha256).digest()


def _snapshot_key() -> bytes:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = config_home / "rlrun" / "snapshot.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)  # readable by this user only
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # whole or not at all; the first of racing processes wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_bytes()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return path


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json, or {} where it is missing or damaged."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def record_failure(run_dir: Path, error: Exception) -> None:
    """Mark the run failed in summary.json, keeping whatever the summary already holds."""
    write_summary(run_dir, {**read_summary(run_dir), "status": "failed", "error": str(error)})
