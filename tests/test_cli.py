"""The `rlrun` command: a few real console-script runs end to end (each subprocess pays about
2 s of start-up), and the CLI's checks and the trainer's user errors in-process."""

import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from typer.testing import CliRunner

from helpers import ALGOS, CLI_RUN, TINY, compose_config, read_summary, run_rlrun, tb_events
from rlrun import cli, launch
from rlrun.errors import RLRunError
from rlrun.trainer import train

REQUIRED_TAGS = {
    "rollout/episodic_return", "rollout/episodic_length", "train/kl", "train/approx_kl",
    "train/clipfrac", "train/entropy", "train/policy_loss", "train/value_loss",
    "train/explained_variance", "train/learning_rate", "perf/sps", "eval/episodic_return",
}


def _curves(run_dir):
    events = tb_events(run_dir)
    return [(e.step, e.value) for tag in ("train/policy_loss", "train/kl", "eval/episodic_return") for e in events.Scalars(tag)]


def test_train_writes_a_complete_run_directory(cli_run):
    run_dir, result = cli_run
    assert f"tensorboard --logdir {run_dir / 'tb'}" in result.stdout.replace("\n", "")

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "id: CartPole-v1" in (run_dir / "config.yaml").read_text()  # resolved copy

    summary = read_summary(run_dir)
    assert summary["status"] == "completed"
    # env steps count real transitions (not reset steps); the last rollout may overshoot
    resolved = OmegaConf.load(run_dir / "config.yaml")
    batch = resolved.env.num_envs * resolved.algo.rollout_steps
    assert 2048 <= summary["env_steps"] < 2048 + batch
    assert summary["eval_episodes"] == 10 and summary["eval_return_mean"] > 0
    assert summary["sps"] == pytest.approx(summary["env_steps"] / summary["wall_seconds"], rel=0.01)

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"format_version", "policy", "algo", "config", "global_step", "torch_rng", "collector"} <= checkpoint.keys()
    assert checkpoint["global_step"] == summary["env_steps"] and checkpoint["updates"] == summary["updates"]
    assert (run_dir / "checkpoint.prev.pt").is_file()  # the checkpoint of the update before, kept
    assert (run_dir / "envs.snapshot").is_file()  # classic control: the exact environments, signed
    assert "optimizer" in checkpoint["algo"]
    # a run trained alone is a group of one; its checkpoint holds an ordinary network's shapes
    # (no run dimension), its Adam state one entry per parameter in those shapes
    assert summary["group_size"] == 1
    policy, optimizer = checkpoint["policy"], checkpoint["algo"]["optimizer"]
    (hidden,) = resolved.policy.hidden_sizes
    assert policy["actor.body.0.weight"].shape == (hidden, 4) and policy["critic.2.bias"].shape == (1,)
    params = [tensor for name, tensor in policy.items() if name.startswith(("actor.body.", "critic."))]
    assert [m.shape for m in optimizer["exp_avgs"]] == [m.shape for m in optimizer["exp_avg_sqs"]] == [p.shape for p in params]
    assert checkpoint["config"]["algo"]["clip_eps"] == 0.2

    events = tb_events(run_dir)
    assert REQUIRED_TAGS <= set(events.Tags()["scalars"])
    kl_steps = [e.step for e in events.Scalars("train/kl")]
    assert len(kl_steps) == summary["updates"] and kl_steps == sorted(set(kl_steps)) and kl_steps[-1] == summary["env_steps"]
    epochs = sum(e.value for e in events.Scalars("train/epochs"))  # target_kl may cut an update short
    assert optimizer["steps"] == [epochs * resolved.algo.num_minibatches] * len(params)  # one per minibatch
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= hparams.keys()
    assert b"algo.clip_eps" in hparams["_hparams_/session_start_info"]


def test_same_seed_gives_identical_runs(cli_run, tmp_path):
    """The CLI's run, repeated in this process: the same curves, weights and evaluation."""
    run_dir = cli_run[0]
    assert train(compose_config(*CLI_RUN), tmp_path) == read_summary(run_dir)["eval_return_mean"]
    assert _curves(tmp_path) == _curves(run_dir)
    ours, theirs = (torch.load(d / "checkpoint.pt", weights_only=True)["policy"] for d in (tmp_path, run_dir))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_multirun_gives_each_job_its_own_run_and_survives_a_failing_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("train", "-m", "seed=1,-1", f"hydra.sweep.dir={sweep_dir}", *TINY, cwd=tmp_path)
    assert result.returncode != 0  # the sweep reports the failure...
    assert "seed must be >= 0" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    # Run directories (and so TensorBoard run names) are named by the job's swept overrides.
    completed, failed = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".hydra")
    assert (completed.name, failed.name) == ("0_seed=1", "1_seed=-1")
    assert read_summary(failed)["status"] == "failed"
    summary = read_summary(completed)  # ...and keeps the rest
    assert summary["status"] == "completed" and summary["seed"] == 1
    assert "train/kl" in tb_events(completed).Tags()["scalars"]


# Bad input through the real command, one case per path: refused before Hydra runs (rlrun's
# own check), refused by Hydra's composition (its type check), refused inside the job (the
# schema's range check: the run directory Hydra made is removed again), and a run that
# starts and fails (exit 1). The other bad inputs are checked in-process below and in
# test_config.py: their exit codes come from these same paths.
@pytest.mark.parametrize(
    "overrides, code, message",
    [
        ("algo=nope", 2, f"Unknown algo 'nope'. Available: {', '.join(ALGOS)}."),
        ("algo.lr=abc", 2, "algo.lr"),
        ("total_timesteps=-5", 2, "total_timesteps must be >= 1"),
        ("algo.lr=1e30 total_timesteps=2048", 1, "Training diverged at update 1"),
        ("env=generic env.id=Pendulum-v1 target_return=solved", 2, "target_return=solved stops at env.solved_return, and neither the config of Pendulum-v1 nor Gymnasium sets one"),
    ],
    ids=["rlrun-check", "hydra-check", "schema-check", "failed-run", "resolver-check"],
)
def test_bad_input_is_one_clear_paragraph_and_its_exit_code(tmp_path, overrides, code, message):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", *overrides.split(), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    output = " ".join((result.stdout + result.stderr).split())  # undo terminal wrapping
    assert result.returncode == code, output
    assert message in output
    assert "Traceback" not in output
    if code == 2:
        assert not run_dir.exists()  # a refused configuration leaves no run behind
    else:
        assert read_summary(run_dir)["status"] == "failed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["algo=ppo_clp"], "Did you mean ppo_clip"),
        (["env=NoSuchEnv-v0"], "Unknown env 'NoSuchEnv-v0'."),
        (["env=MountainCar-v0"], "Any registered Gymnasium id runs with generic defaults as env=generic env.id=<id>."),
        (["-m", "algo=pg,nope"], "Unknown algo 'nope'."),
        (["algo.lr=1e-3", "algo=nope"], "Unknown algo 'nope'."),  # the key before the choice it belongs to
        (["algo.no_such_key=1"], "no_such_key"),
        (["algo=pg", "algo.clip_eps=0.1"], "`clip_eps` is a key of algo=ppo_clip"),
    ],
)
def test_the_cli_refuses_bad_overrides_before_hydra_runs(args, message):
    with pytest.raises(RLRunError) as refusal:
        launch.check_overrides(args)
    assert refusal.value.exit_code == 2
    assert message in " ".join(str(refusal.value).split())


def test_hydra_refuses_values_of_the_wrong_type():
    """As `algo.lr=abc` above, through the real command."""
    with pytest.raises(ConfigCompositionException, match="seed=abc"):
        compose_config("algo=pg", "seed=abc")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.id=NoSuchEnv-v0"], "Unknown Gymnasium environment 'NoSuchEnv-v0'"),
        (["env=generic", "env.id=Hoper-v5"], "Did you mean: Hopper-v5"),
    ],
)
def test_the_trainer_refuses_bad_configurations_as_user_errors(tmp_path, overrides, message):
    with pytest.raises(RLRunError) as refusal:
        train(compose_config(*TINY, *overrides), tmp_path)
    assert refusal.value.exit_code == 2 and message in str(refusal.value)


def test_help_is_useful(monkeypatch):
    top = CliRunner().invoke(cli.app, ["--help"])
    assert top.exit_code == 0 and "train" in top.stdout and "summary" in top.stdout
    # `rlrun train --help` is Hydra's help, in this process: it reads and sets sys.argv, which
    # monkeypatch restores; it neither composes a job nor trains.
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    train_help = CliRunner().invoke(cli.app, ["train", "--help"])
    assert train_help.exit_code == 0, train_help.output
    assert f"algo: {', '.join(ALGOS)}" in train_help.stdout  # every registered algorithm
    assert "env: Acrobot-v1, Ant-v5, CartPole-v1" in train_help.stdout
    assert "rlrun train -m seed=1,2,3" in train_help.stdout


def test_target_return_stops_training_early(tmp_path):
    train(compose_config("target_return=40", "total_timesteps=50000", "eval_episodes=2"), tmp_path)
    summary = read_summary(tmp_path)
    assert summary["status"] == "completed" and summary["target_reached"] is True
    assert summary["env_steps"] < 50000 and summary["train_return_recent"] >= 40
