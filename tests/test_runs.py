"""Run directories a person can trust: unique, never written by two processes, never
overwritten, refused configurations leave nothing behind, and the terminal says what happens."""

import json
import signal
import sys
import subprocess
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from helpers import REPO, RLRUN, TINY, compose_config, run_rlrun
from rlrun import launch, tracking
from rlrun.cli import app
from rlrun.errors import RLRunError
from rlrun.lifecycle import StopSignals
from rlrun.trainer import train

RUNNER = CliRunner()


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return events.Scalars(tag)


def test_runs_started_at_once_get_a_directory_each(tmp_path):
    """Two processes claiming the same directory name at once (as the default name does for
    runs started in the same second) get one directory each."""
    same_name = "hydra.run.dir=${rlrun.new_dir:runs/same}"
    processes = [
        subprocess.Popen([str(RLRUN), "train", *TINY, same_name], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    runs = sorted((tmp_path / "runs").iterdir())
    assert [run.name for run in runs] == ["same", "same_2"]
    for run in runs:
        assert _summary(run)["status"] == "completed" and len(list((run / "tb").iterdir())) == 1
        assert len((run / ".hydra" / "overrides.yaml").read_text().splitlines()) == len(TINY)  # each its own record


def test_the_default_run_directory_names_the_run(tmp_path):
    name = launch.new_dir(str(tmp_path / "05-34-44_ppo_clip_CartPole-v1_seed1"))
    assert launch.new_dir(str(tmp_path / "05-34-44_ppo_clip_CartPole-v1_seed1")) == name + "_2"
    import yaml

    pattern = yaml.safe_load((REPO / "configs" / "config.yaml").read_text())["hydra"]["run"]["dir"]
    assert pattern.startswith("${rlrun.new_dir:outputs/") and "_seed${seed}" in pattern


def test_refused_configurations_leave_no_run_directory(tmp_path, monkeypatch):
    result = run_rlrun("train", "+unknown.key=1", cwd=tmp_path)  # the console script, as a user meets it
    assert result.returncode == 2 and "Unknown configuration key 'unknown.key'" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.chdir(tmp_path)
    refused = RUNNER.invoke(app, ["train", "total_timesteps=-5"])  # refused inside the job, after Hydra made the directory
    assert refused.exit_code == 2 and "total_timesteps must be >= 1" in refused.output
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("+algo.learning_rate=1e-3", "Unknown configuration key 'algo.learning_rate'"),
        ("algo.baseline=mean", "`baseline` is a key of algo=pg_baseline"),
        ("+env.foo=1", "Unknown configuration key 'env.foo'"),
        ("+lr=3", "Unknown configuration key 'lr'"),
        ("algo.rollout_step=64", "Did you mean algo.rollout_steps"),
    ],
)
def test_keys_no_schema_has_are_refused_with_the_closest_ones(override, message):
    with pytest.raises(RLRunError, match=message.replace(".", r"\.").replace("`", ".")):
        launch.check_overrides([override])


def test_a_key_added_past_the_cli_is_refused_when_the_config_is_read():
    from rlrun.config import to_object

    with pytest.raises(RLRunError, match="Unknown configuration key 'algo.foo'"):
        to_object(compose_config("+algo.foo=1"))


def test_a_removed_key_is_refused_not_replaced_by_a_hidden_default():
    with pytest.raises(RLRunError, match="would remove what every run reads"):
        launch.check_overrides(["~total_timesteps"])


def test_integral_scientific_notation_reads_as_an_integer():
    args = ["total_timesteps=1e5", "-m", "seed=1e1,2e1", "algo.lr=3e-4", "algo.lr=2.5e-1"]
    assert launch.integral_floats(args) == ["total_timesteps=100000", "-m", "seed=10,20", "algo.lr=3e-4", "algo.lr=2.5e-1"]


def test_a_launcher_whose_plugin_namespace_is_missing_names_the_install(monkeypatch):
    monkeypatch.setitem(launch.PLUGINS, ("hydra/launcher", "joblib"), ("no_such_namespace.joblib_launcher", "joblib"))
    with pytest.raises(RLRunError, match=r"pip install 'rlrun\[joblib\]'"):
        launch.check_overrides(["-m", "hydra/launcher=joblib", "seed=1,2"])


def test_a_new_run_never_writes_into_an_existing_one(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    with pytest.raises(RLRunError, match="already holds a run; .*resume="):
        launch.check_overrides([f"hydra.run.dir={tmp_path / 'run'}"])


def test_version_and_help():
    assert RUNNER.invoke(app, ["--version"]).output.startswith("rlrun ")
    assert RUNNER.invoke(app, ["train", "--version"]).output.startswith("rlrun ")
    assert "rlrun[video]" in " ".join(RUNNER.invoke(app, ["eval", "--help"]).output.split())


def test_train_help_names_the_preset_and_advertises_no_broken_completion(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rlrun"])  # Hydra's help reads and sets sys.argv
    output = RUNNER.invoke(app, ["train", "--help"]).output
    assert "Applied here: configs/tuned/ppo_clip_CartPole-v1.yaml" in output
    assert "-sc" not in output and "shell-completion" not in output
    assert "No preset applied (pg_Pendulum-v1)" in RUNNER.invoke(app, ["train", "algo=pg", "env=Pendulum-v1", "--help"]).output


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short complete run of the default config, trained in-process."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_dir.mkdir()
    train(compose_config("total_timesteps=2048", "eval_interval=1024", "eval_episodes=2"), run_dir)
    return run_dir


def test_a_run_says_what_it_does_on_a_log_file(tmp_path, capsys, monkeypatch):
    """Without a terminal: the run directory at start, plain progress lines, the end."""
    monkeypatch.setattr(tracking, "PLAIN_PROGRESS_SECONDS", 0.0)
    train(compose_config("total_timesteps=3000", "target_return=20", "eval_episodes=2"), tmp_path, choices={"preset": "configs/tuned/x.yaml"})
    out = " ".join(capsys.readouterr().out.split())
    assert f"training ppo_clip on CartPole-v1 to 3,000 env steps with the preset configs/tuned/x.yaml | run dir {tmp_path}" in out
    assert " of 3,000 env steps (" in out and " SPS | recent return " in out and "| eta " in out
    assert "target reached: the last 20 training episodes averaged" in out


def test_periodic_evaluation_draws_a_curve(finished_run):
    assert [event.step for event in _scalars(finished_run, "eval/episodic_return")][:1] != []
    assert len(_scalars(finished_run, "eval/episodic_return")) >= 2  # at 1024-step intervals, and the end


def test_hparams_hold_the_choices_and_booleans_as_booleans(tmp_path):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    train(compose_config(*TINY), tmp_path, choices={"algo": "ppo_clip", "env": "CartPole-v1", "preset": "none"})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["algo"].string_value == "ppo_clip" and start.hparams["preset"].string_value == "none"
    assert start.hparams["algo.anneal_lr"].WhichOneof("kind") == "bool_value" and start.hparams["algo.anneal_lr"].bool_value


def test_a_stopped_run_says_how_to_continue(tmp_path, capsys):
    signals = StopSignals()
    signals.received = signal.SIGINT  # as if Ctrl-C came during start-up
    with pytest.raises(KeyboardInterrupt):
        train(compose_config(*TINY), tmp_path, signals)
    assert f"continue with: rlrun train resume={tmp_path}" in " ".join(capsys.readouterr().out.split())
    assert _summary(tmp_path)["status"] == "interrupted"


def test_resuming_a_finished_run_has_nothing_to_train(finished_run, capsys):
    before = _summary(finished_run)["env_steps"]
    train(compose_config("total_timesteps=2048", "eval_interval=1024", "eval_episodes=2", f"resume={finished_run}"), finished_run)
    assert f"nothing to train: {before:,} of 2,048 env steps already done" in capsys.readouterr().out.replace("\n", " ")
    assert _summary(finished_run)["env_steps"] == before


def test_a_sweep_names_jobs_by_swept_keys_and_says_how_to_read_it(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("train", "-m", "env.num_envs=0,2", "algo.lr=0.0123456", *TINY[:1], "algo.rollout_steps=16", "eval_episodes=1", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode != 0
    assert "job 0 failed (env.num_envs=0" in result.stderr and "env.num_envs must be >= 1" in result.stderr
    assert f"rlrun summary {sweep_dir}" in result.stdout and f"tensorboard --logdir {sweep_dir}" in result.stdout
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".hydra") == ["0_env.num_envs=0", "1_env.num_envs=2"]
    start = EventAccumulator(str(sweep_dir / "1_env.num_envs=2" / "tb"))
    start.Reload()
    assert b"ppo_clip_CartPole-v1.yaml" in start.PluginTagToContent("hparams")["_hparams_/session_start_info"]


def test_job_names_round_floats_and_stay_short():
    assert launch.job_name(["algo.lr=0.000123456789", "seed=2", "env.num_envs=8"], ["env.num_envs"]) == "algo.lr=0.0001235,seed=2"
    assert len(launch.job_name([f"algo.lr={'1' * 400}"], []).encode()) < 255


def test_two_writers_of_one_run_the_second_is_refused(finished_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / ".hydra").mkdir()  # as `rlrun train` records the run's overrides
    (run_dir / ".hydra" / "overrides.yaml").write_text("- total_timesteps=2048\n- eval_interval=1024\n- eval_episodes=2\n")
    first = subprocess.Popen([str(RLRUN), "train", f"resume={run_dir}", "total_timesteps=60000"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while (run_dir / ".lock").read_text().strip() != str(first.pid):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    second = run_rlrun("train", f"resume={run_dir}", "total_timesteps=60000", cwd=tmp_path)
    assert second.returncode == 2 and f"Another rlrun process (PID {first.pid}) is training in {run_dir}" in " ".join(second.stderr.split())
    assert first.wait(timeout=120) == 0, first.stderr.read()
    steps = [event.step for event in _scalars(run_dir, "train/kl")]
    assert steps == sorted(set(steps)) and steps[-1] == _summary(run_dir)["env_steps"] >= 60000
    assert len(list((run_dir / ".hydra").glob("resume-*"))) == 2  # one record each, none shared
