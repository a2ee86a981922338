"""Interrupts, resume, evaluation, damaged checkpoints, divergence: nothing paid for is lost."""

import json
import signal
import subprocess
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import RLRUN, compose_config, run_rlrun
from rlrun.config import to_object
from rlrun.lifecycle import TrainingDiverged
from rlrun.trainer import Trainer

# About a second of training (30 updates), checkpointed every 2 updates.
LONG = ["total_timesteps=30000", "checkpoint_interval=2", "eval_episodes=3"]


def _start(run_dir, *overrides):
    return subprocess.Popen(
        [str(RLRUN), "train", f"hydra.run.dir={run_dir}", *LONG, *overrides],
        cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _interrupt_after_first_checkpoint(process, run_dir, signum):
    deadline = time.time() + 60
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    process.communicate(timeout=60)
    return process.returncode


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _steps(run_dir, tag="train/kl"):
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def _policy(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["policy"]


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_resume_matches_an_uninterrupted_run(tmp_path, signum, exit_code):
    interrupted = tmp_path / "interrupted"
    process = _start(interrupted)
    assert _interrupt_after_first_checkpoint(process, interrupted, signum) == exit_code
    summary = _summary(interrupted)
    assert summary["status"] == "interrupted" and summary["env_steps"] < 30000
    checkpoint = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == summary["env_steps"] == _steps(interrupted)[-1]

    resumed = run_rlrun("train", f"resume={interrupted}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert run_rlrun("train", f"hydra.run.dir={reference}", *LONG, cwd=tmp_path).returncode == 0

    # Same steps in the curves, none twice, and bit-identical final weights and evaluation.
    assert _steps(interrupted) == _steps(reference)
    assert _summary(interrupted)["eval_return_mean"] == _summary(reference)["eval_return_mean"]
    final, expected = _policy(interrupted), _policy(reference)
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert (interrupted / ".hydra" / "overrides.yaml").is_file()  # the original record is kept


def test_resume_refuses_a_changed_configuration(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun("train", f"hydra.run.dir={run_dir}", "total_timesteps=2048", cwd=tmp_path).returncode == 0
    result = run_rlrun("train", f"resume={run_dir}", "algo.lr=0.1", cwd=tmp_path)
    assert result.returncode == 2 and "only other argument it takes is total_timesteps" in " ".join(result.stderr.split())
    longer = run_rlrun("train", f"resume={run_dir}", "total_timesteps=4096", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    steps = _summary(run_dir)["env_steps"]
    assert steps >= 4096
    again = run_rlrun("train", f"resume={run_dir}", cwd=tmp_path)  # keeps the extended total
    assert again.returncode == 0, again.stderr
    assert _summary(run_dir)["env_steps"] == steps and _summary(run_dir)["status"] == "completed"
    assert "total_timesteps: 4096" in next((run_dir / ".hydra").glob("resume-*/config.yaml")).read_text()


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun("train", f"hydra.run.dir={run_dir}", "total_timesteps=2048", cwd=tmp_path).returncode == 0
    before = (run_dir / "summary.json").read_text()
    overrides = run_dir / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- algo.clip_eps=0.3\n")  # the saved config no longer matches
    result = run_rlrun("train", f"resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and "these differ: algo.clip_eps" in " ".join(result.stderr.split())
    assert (run_dir / "summary.json").read_text() == before


def test_a_checkpoint_of_another_format_is_refused_without_harm(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun("train", f"hydra.run.dir={run_dir}", "total_timesteps=2048", cwd=tmp_path).returncode == 0
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "format_version": 1}, run_dir / "checkpoint.pt")
    before = (run_dir / "summary.json").read_text()
    result = run_rlrun("train", f"resume={run_dir}", "total_timesteps=4096", cwd=tmp_path)
    assert result.returncode == 2 and "has checkpoint format 1; this rlrun reads format 2" in result.stderr
    assert (run_dir / "summary.json").read_text() == before


def test_ctrl_c_with_subprocess_environments_still_stops_gracefully(tmp_path):
    run_dir = tmp_path / "run"
    process = _start(run_dir, "env.vectorization=async", "env.num_envs=2")
    assert _interrupt_after_first_checkpoint(process, run_dir, signal.SIGINT) == 130
    assert _summary(run_dir)["status"] == "interrupted"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == _summary(run_dir)["env_steps"]


def test_eval_reproduces_the_runs_own_evaluation(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun("train", f"hydra.run.dir={run_dir}", "total_timesteps=2048", cwd=tmp_path).returncode == 0
    result = run_rlrun("eval", str(run_dir), "--episodes", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"return {_summary(run_dir)['eval_return_mean']:.2f}" in result.stdout


def test_eval_records_playable_mp4(tmp_path):
    pytest.importorskip("moviepy", reason="the video extra (pip install 'rlrun[video]') is not installed")
    import imageio.v3 as iio

    run_dir = tmp_path / "run"
    assert run_rlrun("train", f"hydra.run.dir={run_dir}", "total_timesteps=2048", cwd=tmp_path).returncode == 0
    result = run_rlrun("eval", str(run_dir), "--episodes", "2", "--video", str(tmp_path / "videos"), cwd=tmp_path,
                       env={"SDL_VIDEODRIVER": "dummy"})
    assert result.returncode == 0, result.stderr
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 2
    frames = iio.imread(videos[0])
    assert frames.ndim == 4 and frames.shape[0] > 5  # (frames, height, width, rgb)


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun("train", f"hydra.run.dir={run_dir}", "total_timesteps=4096", "checkpoint_interval=1", cwd=tmp_path).returncode == 0
    newest = run_dir / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    result = run_rlrun("eval", str(run_dir), "--episodes", "2", cwd=tmp_path)
    assert result.returncode == 0
    assert "checkpoint.pt is unreadable" in result.stderr and "using" in result.stderr

    previous = run_dir / "checkpoint.prev.pt"
    previous.write_bytes(b"")
    result = run_rlrun("eval", str(run_dir), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "No usable checkpoint" in result.stderr and "checkpoint.prev.pt is unreadable" in " ".join(result.stderr.split())


def test_divergence_stops_with_the_update_named_and_keeps_the_last_good_checkpoint(tmp_path):
    config = to_object(compose_config("checkpoint_interval=1", "total_timesteps=100000"))
    trainer = Trainer(config, {}, tmp_path)
    from rlrun.tracking import RunTracker

    with RunTracker(tmp_path, config.total_timesteps, trainer.console) as tracker:
        for _ in range(2):
            trainer.train_one_update(tracker, 0, time.perf_counter())
        good = {name: p.clone() for name, p in trainer.policy.state_dict().items()}
        config.algo.lr = 1e30  # a step this large overflows the weights
        with pytest.raises(TrainingDiverged, match=r"at update 3 .* last good checkpoint \(env step \d+\) is kept"):
            trainer.train_one_update(tracker, 0, time.perf_counter())
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["updates"] == 2
    assert all(torch.equal(saved["policy"][name], good[name]) for name in good)
    trainer.save(0.0)  # refuses to overwrite it with non-finite weights
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["updates"] == 2


def test_divergence_from_the_cli_is_a_failed_run(tmp_path):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", f"hydra.run.dir={run_dir}", "algo.lr=1e30", "total_timesteps=2048", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Training diverged at update 1" in " ".join(result.stderr.split())
    assert _summary(run_dir)["status"] == "failed"
