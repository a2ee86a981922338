"""Faults and hostile run directories: nothing lost, nothing executed, no traceback."""

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import RLRUN, compose_config, run_rlrun
from rlrun import checkpoint as checkpoint_module
from rlrun.checkpoint import load_checkpoint
from rlrun.cli import app
from rlrun.launch import resume_arguments
from rlrun.errors import RLRunError
from rlrun.lifecycle import DiskFull
from rlrun.trainer import train

RUNNER = CliRunner()
OVERRIDES = ["total_timesteps=2048", "eval_interval=0", "eval_episodes=2", "checkpoint_interval=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short complete run with a checkpoint every update, as `rlrun train` leaves it."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in OVERRIDES))
    train(compose_config(*OVERRIDES), run_dir)
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


class Payload:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_checkpoint_that_would_run_code_is_refused_by_eval_and_resume(run_dir, tmp_path):
    target = tmp_path / "pwned"
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "policy": Payload(target)}, run_dir / "checkpoint.pt")
    result = RUNNER.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 2 and "Refusing to open" in result.output and "could run code" in result.output
    resumed = RUNNER.invoke(app, ["train", f"resume={run_dir}"])
    assert resumed.exit_code == 2 and "Refusing to open" in resumed.output
    assert not target.exists()


def test_a_foreign_env_snapshot_is_never_unpickled(run_dir, tmp_path, capsys):
    """Signed with another user's key (or forged): resume starts fresh episodes instead."""
    target = tmp_path / "pwned"
    import pickle

    data = (run_dir / "envs.snapshot").read_bytes()
    forged = data[:32] + data[32:40] + pickle.dumps(Payload(target))
    (run_dir / "envs.snapshot").write_bytes(forged)
    step = load_checkpoint(run_dir)["global_step"]
    assert checkpoint_module.load_env_snapshot(run_dir, step) is None
    assert not target.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: torch.save({"weights": torch.zeros(3)}, path), "is not an rlrun checkpoint of this version (missing: "),
        (lambda path: torch.save({**torch.load(path, weights_only=True), "format_version": 7}, path), "has checkpoint format 7"),
    ],
)
def test_checkpoints_of_other_programs_or_versions_get_one_paragraph(run_dir, damage, message):
    damage(run_dir / "checkpoint.pt")
    result = RUNNER.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_a_checkpoint_missing_a_key_is_refused(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state["policy"]["actor.body.0.weight"]
    torch.save(state, run_dir / "checkpoint.pt")
    result = RUNNER.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 2 and "does not fit its own configuration" in result.output


def test_the_fallback_to_the_previous_checkpoint_is_said_on_the_terminal(run_dir):
    (run_dir / "checkpoint.pt").write_bytes(b"")
    result = RUNNER.invoke(app, ["eval", str(run_dir), "--episodes", "1"])
    assert result.exit_code == 0 and "warning: using" in result.output and "checkpoint.prev.pt" in result.output


@pytest.mark.parametrize(
    "override",
    [
        "hydra.job_logging.handlers.file.filename=/tmp/elsewhere/train.log",
        "hydra.job_logging.formatters.simple.format='touch /tmp/x # %(message)s'",
        "total_timesteps=${oc.env:HOME}",
        "+algo.extra=1",
        "++seed=3",
        "~eval_episodes",
        "seed=${oc.env:SEED}",
    ],
)
def test_resume_replays_only_plain_config_overrides(run_dir, override):
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- {json.dumps(override)}\n")
    with pytest.raises(RLRunError, match="not a plain `key=value` config override"):
        resume_arguments([f"resume={run_dir}"])


def test_resume_reads_neither_a_planted_record_nor_a_damaged_one(run_dir):
    planted = run_dir / ".hydra" / "resume-9999" / "overrides.yaml"
    planted.parent.mkdir()
    planted.write_text("- algo.lr=0.5\n")
    args = resume_arguments([f"resume={run_dir}"])
    assert "algo.lr=0.5" not in args and "total_timesteps=2048" in args[:4] + args
    (run_dir / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    with pytest.raises(RLRunError, match="overrides.yaml is damaged"):
        resume_arguments([f"resume={run_dir}"])


def test_crafted_overrides_write_nothing_outside_the_run(run_dir, tmp_path):
    outside = tmp_path / "outside"
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- hydra.job_logging.handlers.file.filename={outside}/train.log\n")
    result = RUNNER.invoke(app, ["train", f"resume={run_dir}"])
    assert result.exit_code == 2 and not outside.exists()


def test_a_full_disk_stops_with_one_paragraph_and_keeps_the_last_checkpoint(run_dir, tmp_path, monkeypatch):
    """A simulated ENOSPC from the third checkpoint on: exit 1, no temporary file, the last
    complete checkpoint loads, and the run resumes from it once there is room."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    real_save, saves = torch.save, []

    def save(state, path):
        saves.append(path)
        if len(saves) >= 3:
            Path(path).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from OSError(errno.ENOSPC, "No space left on device")
        real_save(state, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    with pytest.raises(DiskFull) as raised:
        train(compose_config(*OVERRIDES), fresh)
    message = str(raised.value)
    assert raised.value.exit_code == 1 and "is full" in message and "resume=" in message and "\n" not in message
    assert not list(fresh.glob(".*.tmp")) and not list(fresh.glob("*.tmp"))
    kept = load_checkpoint(fresh)["global_step"]
    assert f"env step {kept:,}" in message
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    (fresh / ".hydra").mkdir()
    (fresh / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in OVERRIDES))
    result = RUNNER.invoke(app, ["train", f"resume={fresh}"])
    assert result.exit_code == 0, result.output
    assert json.loads((fresh / "summary.json").read_text())["status"] == "completed"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.mark.slow  # a real training process filling a real disk; the simulated ENOSPC test above is the fast check
def test_a_real_full_disk_on_a_small_tmpfs(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "400k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated ENOSPC test covers the logic")
    try:
        run_dir = disk / "run"
        process = subprocess.Popen(
            [str(RLRUN), "train", f"hydra.run.dir={run_dir}", "total_timesteps=1000000", "torch_compile=false", "checkpoint_interval=1", "eval_interval=0"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.time() + 60
        while not (run_dir / "checkpoint.prev.pt").exists():
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.02)
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1 and "is full" in stderr and "Traceback" not in stderr, stderr
        assert not list(run_dir.glob(".*.tmp"))
        step = load_checkpoint(run_dir)["global_step"]
        filler.unlink()
        result = run_rlrun("train", f"resume={run_dir}", f"total_timesteps={step + 2048}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)  # lazy: a dying process may still hold a file


def test_a_run_killed_before_its_first_checkpoint_is_dead_and_resumes_afresh(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [str(RLRUN), "train", f"hydra.run.dir={run_dir}", "total_timesteps=10000000", "torch_compile=false", "checkpoint_interval=0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not (run_dir / "summary.json").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert json.loads((run_dir / "summary.json").read_text())["pid"] == process.pid
    summary = RUNNER.invoke(app, ["summary", str(tmp_path)])
    assert "dead" in summary.output
    resumed = run_rlrun("train", f"resume={run_dir}", "total_timesteps=2048", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "has no checkpoint yet: training it from the start with its configuration" in " ".join(resumed.stderr.split())
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert os.path.exists(run_dir / "checkpoint.pt")
