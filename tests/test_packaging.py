"""Hydra finds the configs from the source checkout and from an installed wheel."""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import REPO


def test_source_checkout_uses_the_top_level_configs_and_cfg_job_only_prints(tmp_path):
    """In a checkout, rlrun/configs links to the top-level configs/; no install is needed.
    `rlrun train --cfg job` prints the composed config, overrides applied, and trains nothing."""
    assert Path(importlib.util.find_spec("rlrun.configs").origin).resolve().parent == REPO / "configs"
    result = subprocess.run(
        [sys.executable, "-m", "rlrun", "train", "--cfg", "job", "algo.lr=0.01", "env.num_envs=16"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "clip_eps" in result.stdout and "lr: 0.01" in result.stdout and "num_envs: 16" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no outputs/: nothing ran


def test_wheel_ships_the_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("rlrun-*.whl")
    configs = sorted(f"rlrun/configs/{p.relative_to(REPO / 'configs')}" for p in (REPO / "configs").rglob("*.yaml"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
        assert set(configs) <= shipped, set(configs) - shipped  # every config file, not only some
        site = tmp_path / "site"
        archive.extractall(site)  # what `pip install --target` does with a pure-Python wheel
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's rlrun shadows the checkout's
    where = subprocess.run(
        [sys.executable, "-c", "import rlrun.configs; print(rlrun.configs.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )
    assert where.stdout.startswith(str(site))
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "rlrun", "train", f"hydra.run.dir={run_dir}", "total_timesteps=256", "env.num_envs=8", "algo.rollout_steps=16", "eval_episodes=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (run_dir / "summary.json").is_file()
