"""Interrupts, resume, evaluation, damaged checkpoints, divergence: nothing paid for is lost.

Signals and a refused resume go through the real `rlrun` command; the rest runs in-process
on copies of the session's one `rlrun train` run (the `cli_run` fixture)."""

import os
import re
import signal
import subprocess
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import RLRUN, TINY, compose_config, group_trainer, read_summary, run_rlrun, tb_events
from rlrun import cli, launch
from rlrun.checkpoint import check_resumable
from rlrun.config import EnvConfig, PolicyConfig
from rlrun.errors import RLRunError
from rlrun.evaluation import evaluate, evaluate_run
from rlrun.lifecycle import StopSignals, TrainingDiverged, non_finite
from rlrun.policies import ActorCritic
from rlrun.trainer import train

# About a second of training (10 updates of 32 envs x 32 steps), checkpointed every 2 updates
# and evaluated every 4096 steps.
LONG = ["total_timesteps=10000", "checkpoint_interval=2", "eval_interval=4096", "eval_episodes=3"]


def _start(run_dir, *overrides):
    return subprocess.Popen(
        [str(RLRUN), "train", f"hydra.run.dir={run_dir}", *LONG, *overrides],
        cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a job in a terminal
    )


def _interrupt_after_first_checkpoint(process, run_dir, signum, group=False):
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    if group:  # Ctrl-C in a terminal: the whole foreground process group gets SIGINT
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    return process.returncode


def _steps(run_dir, tag="train/kl"):
    return [event.step for event in tb_events(run_dir).Scalars(tag)]


def _policy(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["policy"]


def _files(run_dir):
    """Every file of a run but Hydra's records, logs and the lock's holder: name -> bytes."""
    return {
        path.relative_to(run_dir): path.read_bytes() for path in sorted(run_dir.rglob("*"))
        if path.is_file() and ".hydra" not in path.parts and path.suffix != ".log" and path.name != ".lock"
    }


def _resume_in_process(run_dir, *args):
    """What `rlrun train resume=RUN_DIR ARGS` runs, without Hydra's job around it."""
    overrides = launch.resume_arguments([f"resume={run_dir}", *args])
    return train(compose_config(*(o for o in overrides if not o.startswith("hydra."))), run_dir)


def test_sigterm_stops_cleanly_and_resume_matches_an_uninterrupted_run(tmp_path):
    interrupted = tmp_path / "interrupted"
    process = _start(interrupted)
    assert _interrupt_after_first_checkpoint(process, interrupted, signal.SIGTERM) == 128 + signal.SIGTERM
    summary = read_summary(interrupted)
    assert summary["status"] == "interrupted" and summary["env_steps"] < 10000
    checkpoint = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == summary["env_steps"] == _steps(interrupted)[-1]

    resumed = run_rlrun("train", f"resume={interrupted}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    reference.mkdir()
    train(compose_config(*LONG), reference)  # the same run uninterrupted (this process trains as the CLI does)

    # Same steps in the curves, none twice, and bit-identical final weights and evaluations.
    assert _steps(interrupted) == _steps(reference)
    assert _steps(interrupted, "eval/episodic_return") == _steps(reference, "eval/episodic_return")
    assert read_summary(interrupted)["eval_return_mean"] == read_summary(reference)["eval_return_mean"]
    final, expected = _policy(interrupted), _policy(reference)
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert (interrupted / ".hydra" / "overrides.yaml").is_file()  # the original record is kept...
    (record,) = (interrupted / ".hydra").glob("resume-*/config.yaml")  # ...beside the resume's own
    assert "total_timesteps: 10000" in record.read_text()


def test_ctrl_c_with_subprocess_environments_still_stops_gracefully(tmp_path):
    """The environment workers get the Ctrl-C too; they ignore it and the run stops cleanly."""
    run_dir = tmp_path / "run"
    process = _start(run_dir, "env.vectorization=async", "env.num_envs=2")
    assert _interrupt_after_first_checkpoint(process, run_dir, signal.SIGINT, group=True) == 128 + signal.SIGINT
    assert read_summary(run_dir)["status"] == "interrupted"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == read_summary(run_dir)["env_steps"]


def test_resume_trains_longer_only_when_asked_and_refuses_other_changes(cli_run_copy):
    run_dir = cli_run_copy
    with pytest.raises(RLRunError, match="only other argument it takes is total_timesteps"):
        launch.resume_arguments([f"resume={run_dir}", "algo.lr=0.1"])
    assert any(o.startswith("hydra.output_subdir=.hydra/resume-") for o in launch.resume_arguments([f"resume={run_dir}"]))
    before = read_summary(run_dir)["env_steps"]
    _resume_in_process(run_dir, "total_timesteps=4096")
    steps = read_summary(run_dir)["env_steps"]
    kl_steps = sorted(_steps(run_dir))  # two event files written in the same second: in pid order
    assert steps >= 4096 and kl_steps == sorted(set(kl_steps)) and before in kl_steps and kl_steps[-1] == steps
    # Resumed again without a total, it keeps the extended one: nothing left to train.
    assert "total_timesteps=4096" in launch.resume_arguments([f"resume={run_dir}"])
    _resume_in_process(run_dir)
    assert read_summary(run_dir)["env_steps"] == steps and read_summary(run_dir)["status"] == "completed"


def test_a_refused_resume_leaves_the_run_as_it_was(cli_run_copy, tmp_path):
    run_dir = cli_run_copy
    before = _files(run_dir)
    overrides = run_dir / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- algo.clip_eps=0.3\n")  # the saved config no longer matches
    result = run_rlrun("train", f"resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and "these differ: algo.clip_eps" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert _files(run_dir) == before


def test_a_checkpoint_of_another_format_is_refused_without_harm(cli_run_copy):
    run_dir = cli_run_copy
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "format_version": 1}, run_dir / "checkpoint.pt")
    before = _files(run_dir)
    with pytest.raises(RLRunError, match="has checkpoint format 1; this rlrun reads format 2") as refusal:
        _resume_in_process(run_dir, "total_timesteps=4096")
    assert refusal.value.exit_code == 2
    assert _files(run_dir) == before


def test_eval_reproduces_the_runs_own_evaluation(cli_run):
    run_dir = cli_run[0]
    result = CliRunner().invoke(cli.app, ["eval", str(run_dir), "--episodes", "10"])
    assert result.exit_code == 0, result.output
    assert f"return {read_summary(run_dir)['eval_return_mean']:.2f}" in result.stdout


def test_stochastic_eval_samples_actions_and_repeats(cli_run):
    run_dir = cli_run[0]
    stochastic = evaluate_run(run_dir, 4, stochastic=True)
    np.testing.assert_array_equal(evaluate_run(run_dir, 4, stochastic=True), stochastic)  # seeded draws
    assert not np.array_equal(stochastic, evaluate_run(run_dir, 4))
    result = CliRunner().invoke(cli.app, ["eval", str(run_dir), "--episodes", "4", "--stochastic"])
    assert result.exit_code == 0, result.output
    assert f"stochastic return {stochastic.mean():.2f}" in result.stdout


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a_runs_stochastic_eval_does_not_depend_on_its_group(env_id):
    """Run 0 of a group of two draws its actions as it would alone: from its own generator."""
    env_config = EnvConfig(id=env_id, num_envs=1, vectorization=None, normalize_obs=False, normalize_reward=False, solved_return=None)
    space = gym.make(env_id)
    policies = [
        ActorCritic(space.observation_space, space.action_space, PolicyConfig([16], "tanh", 0.0), False, [torch.Generator().manual_seed(s) for s in seeds])
        for seeds in ([1], [1, 2])
    ]
    alone, grouped = (evaluate(policy, env_config, 3, dict(enumerate((5, 6)[:policy.num_runs])), {0: None, 1: None}, stochastic=True) for policy in policies)
    np.testing.assert_array_equal(grouped[0], alone[0])


def test_a_run_saved_before_solved_return_existed_resumes(cli_run):
    saved = torch.load(cli_run[0] / "checkpoint.pt", weights_only=True)["config"]
    older = {**saved, "env": {key: value for key, value in saved["env"].items() if key != "solved_return"}}
    check_resumable(cli_run[0], older, saved)  # no refusal


def test_eval_records_playable_mp4(tmp_path, monkeypatch, capfd):
    pytest.importorskip("moviepy", reason="the video extra (pip install 'rlrun[video]') is not installed")
    import imageio.v3 as iio

    # A barely trained policy: short episodes, few frames to render and encode.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(compose_config(*TINY), run_dir)
    # No display and no XDG_RUNTIME_DIR, as on a server: SDL must not print its own "error".
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    result = CliRunner().invoke(cli.app, ["eval", str(run_dir), "--episodes", "2", "--video", str(tmp_path / "videos")])
    assert result.exit_code == 0, result.output
    assert "XDG_RUNTIME_DIR" not in capfd.readouterr().err
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(str(video) in result.stdout for video in videos)
    frames = iio.imread(videos[0])
    assert frames.ndim == 4 and frames.shape[0] > 5  # (frames, height, width, rgb)


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(cli_run_copy):
    run_dir = cli_run_copy
    newest = run_dir / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    result = CliRunner().invoke(cli.app, ["eval", str(run_dir), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert "checkpoint.pt is unreadable" in result.stderr and "using" in result.stderr

    previous = run_dir / "checkpoint.prev.pt"
    previous.write_bytes(b"")
    result = CliRunner().invoke(cli.app, ["eval", str(run_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "No usable checkpoint" in result.stderr and "checkpoint.prev.pt is unreadable" in " ".join(result.stderr.split())


def test_divergence_stops_with_the_update_named_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = group_trainer(tmp_path, "checkpoint_interval=1", "total_timesteps=100000")
    run = trainer.runs[0]
    learning_rate, good = trainer.algo.learning_rate, {}

    def exploding_from_update_3(progress):
        if run.updates < 2:
            return learning_rate(progress)
        good.update(trainer.policy.run_state_dict(0))  # the weights of update 2, checkpointed
        return torch.full_like(progress, 1e30)  # a step this large overflows the weights

    trainer.algo.learning_rate = exploding_from_update_3
    trainer.run(StopSignals())  # the loop ends with its only run: it failed
    assert isinstance(run.result, TrainingDiverged) and not run.active
    assert re.search(r"at update 3 .* last good checkpoint \(env step \d+\) is kept", str(run.result)), run.result
    summary = read_summary(run.run_dir)
    assert summary["status"] == "failed" and "Training diverged at update 3" in summary["error"]
    saved = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)
    assert saved["updates"] == 2 and f"env step {saved['global_step']})" in str(run.result)
    assert good.keys() == saved["policy"].keys() and all(torch.equal(saved["policy"][name], good[name]) for name in good)
    assert non_finite(trainer.run_parameters(0), {})
    trainer.save(0)  # refuses to overwrite it with non-finite weights
    assert torch.load(run.run_dir / "checkpoint.pt", weights_only=True)["updates"] == 2

