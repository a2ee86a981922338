"""The real `rlrun` console script, end to end, with tiny budgets."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY, run_rlrun

REQUIRED_TAGS = {
    "rollout/episodic_return", "rollout/episodic_length", "train/kl", "train/approx_kl",
    "train/clipfrac", "train/entropy", "train/policy_loss", "train/value_loss",
    "train/explained_variance", "train/learning_rate", "perf/sps", "eval/episodic_return",
}


def _events(tb_dir):
    accumulator = EventAccumulator(str(tb_dir))
    accumulator.Reload()
    return accumulator


def test_train_writes_a_complete_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", f"hydra.run.dir={run_dir}", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"tensorboard --logdir {run_dir / 'tb'}" in result.stdout.replace("\n", "")

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "id: CartPole-v1" in (run_dir / "config.yaml").read_text()  # resolved copy

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    # env steps count real transitions (not reset steps); the last rollout may overshoot
    assert 256 <= summary["env_steps"] < 256 + 16 * 8
    assert summary["eval_episodes"] == 2 and summary["eval_return_mean"] > 0
    assert summary["wall_seconds"] > 0 and summary["sps"] > 0

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"format_version", "policy", "algo", "config", "global_step", "torch_rng", "collector"} <= checkpoint.keys()
    assert (run_dir / "envs.snapshot").is_file()  # classic control: the exact environments, signed
    assert "optimizer" in checkpoint["algo"]
    assert checkpoint["config"]["algo"]["clip_eps"] == 0.2

    events = _events(run_dir / "tb")
    assert REQUIRED_TAGS <= set(events.Tags()["scalars"])
    kl_steps = [e.step for e in events.Scalars("train/kl")]
    assert kl_steps == sorted(set(kl_steps)) and kl_steps[-1] == summary["env_steps"]
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= hparams.keys()
    assert b"algo.clip_eps" in hparams["_hparams_/session_start_info"]


def test_multirun_gives_each_job_its_own_run(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("train", "-m", "seed=1,2", f"hydra.sweep.dir={sweep_dir}", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".hydra")
    # Run directories (and so TensorBoard run names) are named by the job's overrides.
    assert len(runs) == 2 and runs[0].startswith("0_") and "seed=1" in runs[0] and "seed=2" in runs[1]
    for run, seed in zip(runs, (1, 2)):
        assert json.loads((sweep_dir / run / "summary.json").read_text())["seed"] == seed
        assert "train/kl" in _events(sweep_dir / run / "tb").Tags()["scalars"]


def test_same_seed_gives_identical_curves(tmp_path):
    curves = []
    for name in ("a", "b"):
        result = run_rlrun("train", f"hydra.run.dir={tmp_path / name}", *TINY, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        events = _events(tmp_path / name / "tb")
        curves.append([(e.step, e.value) for tag in ("train/policy_loss", "train/kl") for e in events.Scalars(tag)])
    assert curves[0] == curves[1]


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo=nope", "Unknown algo 'nope'. Available: a2c, pg, pg_baseline, ppo_clip, ppo_kl."),
        ("algo=ppo_clp", "Did you mean ppo_clip"),
        ("env=NoSuchEnv-v0", "Unknown env 'NoSuchEnv-v0'."),
        ("-m algo=pg,nope", "Unknown algo 'nope'."),
        ("algo=pg seed=abc", "seed"),
        ("algo.lr=abc", "algo.lr"),
        ("total_timesteps=-5", "total_timesteps must be >= 1"),
        ("algo.gamma=1.5", "algo.gamma must be in (0, 1]"),
        ("env.id=NoSuchEnv-v0", "Unknown Gymnasium environment 'NoSuchEnv-v0'"),
        ("algo.no_such_key=1", "no_such_key"),
    ],
)
def test_bad_input_is_one_clear_paragraph_and_exit_2(tmp_path, override, message):
    result = run_rlrun("train", *override.split(), f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    output = " ".join((result.stdout + result.stderr).split())  # undo terminal wrapping
    assert message in output
    assert "Traceback" not in output


def test_user_errors_exit_with_code_2(tmp_path):
    result = run_rlrun("train", "env.num_envs=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "env.num_envs must be >= 1" in result.stderr


def test_help_is_useful(tmp_path):
    top = run_rlrun("--help", cwd=tmp_path)
    assert top.returncode == 0 and "train" in top.stdout
    train_help = run_rlrun("train", "--help", cwd=tmp_path)
    assert train_help.returncode == 0
    assert "algo: a2c, pg, pg_baseline, ppo_clip, ppo_kl" in train_help.stdout
    assert "env: Acrobot-v1, CartPole-v1" in train_help.stdout
    assert "rlrun train -m seed=1,2,3" in train_help.stdout


def test_cfg_job_prints_the_config_without_training(tmp_path):
    result = run_rlrun("train", "--cfg", "job", "algo.lr=0.01", "env.num_envs=16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lr: 0.01" in result.stdout and "num_envs: 16" in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "algo, tags",
    [
        ("pg", {"train/grad_var", "train/kl", "train/policy_loss"}),
        ("pg_baseline", {"train/grad_var", "train/kl", "train/value_loss", "train/explained_variance"}),
        ("ppo_kl", {"train/kl", "train/kl_beta", "train/kl_penalty", "train/ratio_max", "train/ratio_min"}),
        ("ppo_clip", {"train/kl", "train/clipfrac", "train/ratio_mean"}),
    ],
)
def test_every_algorithm_runs_from_the_cli_and_logs_its_diagnostics(tmp_path, algo, tags):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", f"algo={algo}", f"hydra.run.dir={run_dir}", "total_timesteps=256", "env.num_envs=8", "eval_episodes=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["algo"] == algo
    assert tags <= set(_events(run_dir / "tb").Tags()["scalars"])


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    tiny = [override for override in TINY if not override.startswith("env.num_envs=")]
    result = run_rlrun("train", "-m", "env.num_envs=0,2", f"hydra.sweep.dir={sweep_dir}", *tiny, cwd=tmp_path)
    assert result.returncode != 0  # the sweep reports the failure...
    assert "env.num_envs must be >= 1" in result.stderr and "Traceback" not in result.stderr
    failed, completed = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".hydra")
    assert json.loads((failed / "summary.json").read_text())["status"] == "failed"
    assert json.loads((completed / "summary.json").read_text())["status"] == "completed"  # ...and keeps the rest


def test_target_return_stops_training_early(tmp_path):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", f"hydra.run.dir={run_dir}", "target_return=40", "total_timesteps=50000", "eval_episodes=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["target_reached"] is True
    assert summary["env_steps"] < 50000 and summary["train_return_recent"] >= 40
