"""Fixtures only; plain helpers (REPO, RLRUN, TINY, run_rlrun, compose_config, ...) are in
helpers.py (tests/ is on sys.path: `pythonpath` in pyproject.toml)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from helpers import CLI_RUN, TINY, run_rlrun


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """One real `rlrun train` (a subprocess) shared by the session: (run_dir, its result).

    Read it only; a test that changes the run takes `cli_run_copy`."""
    root = tmp_path_factory.mktemp("cli_run")
    run_dir = root / "run"
    result = run_rlrun("train", f"hydra.run.dir={run_dir}", *CLI_RUN, cwd=root)
    assert result.returncode == 0, result.stderr
    return run_dir, result


@pytest.fixture
def cli_run_copy(cli_run, tmp_path) -> Path:
    """A copy of the session's `rlrun train` run directory, for a test to change."""
    return Path(shutil.copytree(cli_run[0], tmp_path / "run"))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Small networks run fastest on one thread (rlrun's own default, torch_threads=1). Every
    Trainer sets it for the process anyway; set here, the thread count no longer depends on
    whether a training test happened to run first."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_stale_log_handlers():
    """Hydra run in-process (`rlrun train --help` and the like through CliRunner) configures
    logging: its root handlers write to the streams CliRunner captured, closed once the call
    returns, and every later log record would be a "Logging error" on stderr. Remove the
    handlers a test added (pytest's own come and go by themselves) and restore the level."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before and not type(h).__module__.startswith("_pytest")]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
