"""Sweeps on a cluster: a job warned of its time limit or preemption checkpoints, is requeued,
and continues its own curve."""

import json
import os
import signal
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import TINY, compose_config, run_rlrun
from rlrun.lifecycle import StopSignals
from rlrun.trainer import train


def _steps(run_dir, tag="train/kl"):
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_the_warning_signal_goes_to_the_clusters_handler_after_the_checkpoint():
    handed = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))
    try:
        with StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            assert signals.received == signal.SIGUSR2 and not handed  # the run stops first
            signals.hand_over()
        assert handed == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_sweep_job_that_finds_its_own_checkpoint_continues_it(tmp_path):
    """What a requeued job does: the same job directory, the same config, a larger budget
    reached from where the checkpoint left off; one curve, no step twice."""
    train(compose_config(*TINY, "checkpoint_interval=1"), tmp_path)
    first = _steps(tmp_path)
    train(compose_config(*TINY[1:], "total_timesteps=1024", "checkpoint_interval=1"), tmp_path, continue_run=True)
    steps = _steps(tmp_path)
    assert steps[: len(first)] == first and steps == sorted(set(steps)) and steps[-1] >= 1024
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow  # the job must outlive submitit_local's shortest time limit: about 70 s
def test_a_submitit_job_hit_by_its_time_limit_resumes_with_one_curve(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'rlrun[submitit]'")
    sweep_dir = tmp_path / "sweep"
    # timeout_min=1: submitit_local sends SIGUSR2 30 s in, the job checkpoints and is requeued.
    result = run_rlrun(
        "train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1", "seed=1,2",
        "total_timesteps=1200000", "torch_compile=false", "eval_interval=0", "checkpoint_interval=20", f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for run_dir in (sweep_dir / "0_seed=1", sweep_dir / "1_seed=2"):
        log = (run_dir / "train.log").read_text()
        assert "resumed from env step" in log  # requeued at least once, from its checkpoint
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["env_steps"] >= 1_200_000
        steps = _steps(run_dir)
        assert steps == sorted(set(steps)) and steps[0] < 2000  # one curve from the start, none restarted
