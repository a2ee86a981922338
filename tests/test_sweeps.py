"""Sweeps through Hydra's own launchers and sweepers, and reading them back."""

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from helpers import TINY, run_rlrun
from rlrun import launch
from rlrun.algos import config_classes
from rlrun.config import register_schemas
from rlrun.errors import RLRunError

SWEEP = ["-m", "algo=ppo_clip,ppo_kl", "seed=1,2", *TINY]


def _runs(sweep_dir):
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def _assert_complete_runs(sweep_dir, count):
    runs = _runs(sweep_dir)
    assert len(runs) == count
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
        assert (run / ".hydra" / "config.yaml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    return runs


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A basic-launcher sweep of 2 algorithms x 2 seeds, for the TensorBoard server."""
    root = tmp_path_factory.mktemp("sweep")
    result = run_rlrun("train", *SWEEP, "total_timesteps=1024", f"hydra.sweep.dir={root / 'sweep'}", cwd=root)
    assert result.returncode == 0, result.stderr
    _assert_complete_runs(root / "sweep", 4)
    return root / "sweep"


@pytest.mark.slow(reason="joblib starts worker processes that import torch again: about 15 s")
def test_joblib_launcher_runs_jobs_in_parallel_and_keeps_the_other_results_when_a_job_fails(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "algo.lr=1e30,1e-3", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in result.stderr
    statuses = {run.name.split(",")[0]: json.loads((run / "summary.json").read_text())["status"] for run in _runs(sweep_dir)}
    assert statuses == {"0_algo.lr=1e+30": "failed", "1_algo.lr=0.001": "completed"}
    completed = sweep_dir / next(run.name for run in _runs(sweep_dir) if run.name.startswith("1_"))
    assert (completed / ".hydra" / "config.yaml").is_file() and list((completed / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow(reason="submitit starts a job process that imports torch again and polls it: about 13 s")
def test_submitit_local_launcher_runs_a_real_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("train", "-m", "hydra/launcher=submitit_local", "seed=1", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_complete_runs(sweep_dir, 1)
    assert (sweep_dir / ".submitit").is_dir()


def _hydra_config(*overrides):
    register_schemas(config_classes())
    with initialize_config_module(config_module="rlrun.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True).hydra


def test_slurm_sample_config_composes_into_submitit():
    launcher = _hydra_config("hydra/launcher=slurm").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher") and launcher.cpus_per_task == 2


@pytest.mark.slow(reason="starts a local Ray instance")
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None, reason="needs pip install 'rlrun[ray]'")
def test_ray_launcher_on_a_local_ray_instance(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # Ray's local instance otherwise listens on every interface, not only loopback.
    result = run_rlrun(
        "train", "-m", "hydra/launcher=ray", "seed=1,2", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=600,
        env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert result.returncode == 0, result.stderr
    _assert_complete_runs(sweep_dir, 2)


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None, reason="the ray extra is installed")
def test_a_missing_launcher_plugin_names_its_extra():
    with pytest.raises(RLRunError) as refusal:
        launch.check_overrides(["-m", "hydra/launcher=ray", "seed=1,2"])
    assert refusal.value.exit_code == 2 and "pip install 'rlrun[ray]'" in str(refusal.value)


def test_the_optuna_search_preset_composes_into_the_optuna_sweeper():
    sweeper = _hydra_config("hparams_search=ppo_clip_cartpole").sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"algo.lr", "algo.clip_eps", "algo.epochs", "algo.gae_lambda"}


@pytest.mark.slow(reason="the Optuna sweeper plugin end to end: a subprocess that imports optuna and runs 2 trials, about 6 s")
def test_optuna_search_maximises_the_final_evaluation_return_over_the_preset_and_command_line_space(tmp_path):
    """The preset's search space (hparams_search) plus one more key searched from the command line."""
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun(
        "train", "-m", "hparams_search=ppo_clip_cartpole", "hydra.sweeper.n_trials=2", "algo.ent_coef=interval(0.001,0.01)",
        *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    runs = _assert_complete_runs(sweep_dir, 2)
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    returns = [json.loads((run / "summary.json").read_text())["eval_return_mean"] for run in runs]
    assert best.best_value == max(returns)
    assert set(best.best_params) == {"algo.lr", "algo.clip_eps", "algo.epochs", "algo.gae_lambda", "algo.ent_coef"}
    for run in runs:  # every trial drew its own values from both spaces
        algo = OmegaConf.load(run / ".hydra" / "config.yaml").algo
        assert 0.001 <= algo.ent_coef <= 0.01 and 3e-3 <= algo.lr <= 1e-1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow(reason="a live TensorBoard server, up to a minute to list the runs")
def test_tensorboard_server_lists_the_sweeps_runs_and_tags(sweep_dir):
    port = _free_port()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen([str(tensorboard), "--logdir", str(sweep_dir), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        expected = {f"{run.name}/tb" for run in _runs(sweep_dir)}
        deadline = time.time() + 90
        while True:
            try:
                runs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5))
                if set(runs) >= expected:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "TensorBoard did not list the runs"
            time.sleep(0.5)
        tags = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=10))
        for run in expected:
            assert {"rollout/episodic_return", "train/kl", "eval/episodic_return"} <= set(tags[run])
    finally:
        server.terminate()
        server.wait(timeout=30)
