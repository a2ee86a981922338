"""The batched launcher (`hydra/launcher=batched`): which jobs it groups, and sweeps through it."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf
from typer.testing import CliRunner

from helpers import RLRUN, TINY, compose_config, read_summary, run_rlrun
from rlrun import cli
from rlrun.grouping import describe, group_jobs, group_key, group_values, spread, swept_values

BATCHED = ["-m", "hydra/launcher=batched"]


def _statuses(sweep_dir):
    return {run.name: read_summary(run)["status"] for run in sorted(sweep_dir.iterdir()) if (run / ".hydra").is_dir()}


@pytest.mark.parametrize(
    "first, second",
    [
        (["seed=1", "algo.lr=1e-3", "target_return=100", "algo.target_kl=0.01"], ["seed=2", "algo.lr=3e-4", "target_return=null", "algo.target_kl=null"]),
        (["algo=ppo_kl", "algo.beta_init=1", "algo.kl_target=0.01"], ["algo=ppo_kl", "algo.beta_init=3", "algo.kl_target=0.02"]),
    ],
    ids=["per-run-values-and-their-nulls", "ppo-kl-penalty"],
)
def test_jobs_that_differ_only_in_batchable_values_share_a_group(first, second):
    assert group_key(compose_config(*first)) == group_key(compose_config(*second))


@pytest.mark.parametrize(
    "first, second",
    [
        (["algo=ppo_clip"], ["algo=ppo_kl"]),
        (["env.num_envs=8"], ["env.num_envs=16"]),
        (["algo=pg_baseline", "algo.gae_lambda=null"], ["algo=pg_baseline", "algo.gae_lambda=0.9"]),
        (["resume=/runs/a", "seed=1"], ["resume=/runs/a", "seed=2"]),
    ],
    ids=["algorithm", "unbatchable-key", "null-changes-the-computation", "resuming-job"],
)
def test_jobs_that_differ_otherwise_are_grouped_apart(first, second):
    assert group_key(compose_config(*first)) != group_key(compose_config(*second))


def test_two_algorithms_with_the_same_keys_and_values_are_grouped_apart():
    @dataclass
    class One:
        lr: float = 1e-3

    @dataclass
    class Other:
        lr: float = 1e-3

    assert group_key(OmegaConf.create({"algo": OmegaConf.structured(One)})) != group_key(OmegaConf.create({"algo": OmegaConf.structured(Other)}))


def test_groups_keep_the_sweeps_order_and_split_at_the_size_limit():
    assert group_jobs(["a", "b", "a", "a", "b", "a", "c"], 3) == [[0, 2, 3], [5], [1, 4], [6]]
    assert group_jobs(["a"] * 4, 64) == [[0, 1, 2, 3]]


def test_fewer_groups_than_workers_are_halved_until_every_worker_has_one():
    assert spread([[0, 1, 2, 3, 4]], 2) == [[0, 1, 2], [3, 4]]
    assert spread([[0, 1, 2, 3], [4, 5]], 4) == [[0], [1], [2, 3], [4, 5]]
    assert spread([[0], [1]], 8) == [[0], [1]]  # nothing left to halve
    assert spread([[0, 1], [2, 3]], 2) == [[0, 1], [2, 3]]


def test_the_grouping_is_described_by_the_keys_that_split_it():
    overrides = [[f"seed={seed}", f"algo={algo}", "total_timesteps=256"] for seed in (1, 2, 3) for algo in ("ppo_clip", "ppo_kl")]
    swept = swept_values(overrides)
    assert swept[0] == {"seed": "1", "algo": "ppo_clip"}  # constant overrides are left out
    groups = [[0, 2, 4], [1, 3, 5]]
    assert describe(groups, swept) == "6 jobs in 2 groups of 3 (split by algo)"
    assert group_values([swept[i] for i in groups[1]]) == "seed=1,2,3 algo=ppo_kl"
    assert describe([[0, 1, 2, 3], [4, 5]], swept) == "6 jobs in 2 groups of 4, 2"


def test_hydra_finds_the_launcher_rlrun_ships():
    """Hydra takes launchers only from the hydra_plugins namespace: rlrun's install must put its
    own there (a stale editable install of rlrun would not)."""
    assert importlib.util.find_spec("hydra_plugins.rlrun_batched_launcher") is not None
    assert "BatchedLauncher" in {plugin.__name__ for plugin in Plugins.instance().discover(Launcher)}


def test_a_batched_sweep_trains_each_group_in_one_process_into_ordinary_runs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("train", *BATCHED, "seed=1,2,3", "algo=ppo_clip,ppo_kl", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "6 jobs in 2 groups of 3 (split by algo)" in output
    assert "group 0: jobs 0,2,4: seed=1,2,3 algo=ppo_clip" in output and "group 1: jobs 1,3,5: seed=1,2,3 algo=ppo_kl" in output
    assert set(_statuses(sweep_dir).values()) == {"completed"} and len(_statuses(sweep_dir)) == 6
    for run in (path for path in sweep_dir.iterdir() if path.is_dir()):
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "checkpoint.pt").is_file()
        assert list((run / "tb").glob("events.out.tfevents.*")) and (run / "train.log").read_text()
        assert read_summary(run)["group_size"] == 3
    # A run of the batched sweep continues alone, with the configuration its group gave it.
    run = next(path for path in sweep_dir.iterdir() if path.name.startswith("3_"))
    before = read_summary(run)["env_steps"]
    resumed = CliRunner().invoke(cli.app, ["train", f"resume={run}", "total_timesteps=1024"])
    assert resumed.exit_code == 0, resumed.output
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["env_steps"] >= 1024 > before and summary["group_size"] == 1
    assert summary["seed"] == 2 and summary["algo"] == "ppo_kl"


def test_a_job_refused_by_its_config_fails_alone_and_each_job_resolves_its_own_config(tmp_path):
    """In this process (n_jobs=1), one group per environment; in each, one job's lr is refused.
    The env id comes from ${hydra:runtime.choices.env}: each job reads its own choice."""
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun(
        "train", *BATCHED, "hydra.launcher.n_jobs=1", "env=CartPole-v1,Acrobot-v1", "algo.lr=1e-3,-1", *TINY,
        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "algo.lr must be > 0" in result.stderr and "4 jobs in 2 groups of 2 (split by env)" in result.stdout
    assert _statuses(sweep_dir) == {
        "0_env=CartPole-v1,algo.lr=0.001": "completed", "1_env=CartPole-v1,algo.lr=-1": "failed",
        "2_env=Acrobot-v1,algo.lr=0.001": "completed", "3_env=Acrobot-v1,algo.lr=-1": "failed",
    }
    for run, env in (("0_env=CartPole-v1,algo.lr=0.001", "CartPole-v1"), ("2_env=Acrobot-v1,algo.lr=0.001", "Acrobot-v1")):
        assert OmegaConf.load(sweep_dir / run / "config.yaml").env.id == env


@pytest.mark.parametrize(
    "option, message",
    [
        ("hydra.launcher.max_group_size=0", "hydra.launcher.max_group_size must be a whole number of at least 1, got 0."),
        ("hydra.launcher.foo=1", "hydra.launcher.foo is not an option of the batched launcher. Its options: max_group_size, n_jobs, executor,"),
    ],
)
def test_a_bad_launcher_option_is_refused_before_anything_runs(tmp_path, monkeypatch, option, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    result = CliRunner().invoke(cli.app, ["train", *BATCHED, "seed=1,2", option])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_the_ray_executor_names_its_extra_when_ray_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    result = CliRunner().invoke(cli.app, ["train", *BATCHED, "seed=1,2", "hydra.launcher.executor=ray"])
    assert result.exit_code == 2 and "pip install 'rlrun[ray]'" in result.output


@pytest.mark.slow(reason="submitit starts a job process per group that imports torch again, and polls them: about 7 s")
def test_the_submitit_executor_runs_each_group_as_a_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun(
        "train", *BATCHED, "hydra.launcher.executor=submitit", "hydra.launcher.submitit.cluster=local",
        "seed=1,2", "algo=ppo_clip,ppo_kl", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert set(_statuses(sweep_dir).values()) == {"completed"} and len(_statuses(sweep_dir)) == 4
    assert len([job for job in (sweep_dir / ".submitit").iterdir() if list(job.glob("*_result.pkl"))]) == 2  # a job per group


@pytest.mark.slow(reason="trains two groups in parallel until every run has a checkpoint, then stops them: about 7 s")
@pytest.mark.parametrize("signum, whole_group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm-to-the-launcher"])
def test_a_stop_checkpoints_every_group_then_exits_like_an_interrupted_run(tmp_path, signum, whole_group):
    """Ctrl-C reaches every process of the sweep; a SIGTERM sent to the launcher alone (what
    `timeout` or a scheduler sends) is passed on to the groups."""
    sweep_dir = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [str(RLRUN), "train", *BATCHED, "algo=ppo_clip,ppo_kl", "seed=1,2", "total_timesteps=1000000", "torch_compile=false", "checkpoint_interval=2", "env.num_envs=8", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.time() + 60
    while len(list(sweep_dir.glob("*/checkpoint.pt"))) < 4 and time.time() < deadline:
        time.sleep(0.5)
    if whole_group:
        os.killpg(sweep.pid, signum)
    else:
        os.kill(sweep.pid, signum)
    _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signum, stderr
    assert list(_statuses(sweep_dir).values()) == ["interrupted"] * 4
