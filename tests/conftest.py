from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from rlrun.algos import config_classes
from rlrun.config import register_schemas, to_object

REPO = Path(__file__).resolve().parents[1]
RLRUN = Path(sys.executable).with_name("rlrun")  # the installed console script

# A run that finishes in about a second: 2 updates of 8 envs x 16 steps.
TINY = ["total_timesteps=256", "env.num_envs=8", "algo.rollout_steps=16", "eval_episodes=2"]


def run_rlrun(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `rlrun` console script in a subprocess."""
    return subprocess.run(
        [str(RLRUN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def compose_config(*overrides: str) -> DictConfig:
    """The composed config, as `rlrun train` would see it."""
    register_schemas(config_classes())
    with initialize_config_module(config_module="rlrun.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


def algo_config(name: str, *overrides: str):
    """The config object of algorithm `name` as its yaml sets it, with `algo.`-key overrides."""
    return to_object(compose_config(f"algo={name}", *(f"algo.{o}" for o in overrides))).algo


def policy_config(*overrides: str):
    """The policy config as configs/config.yaml sets it, with `policy.`-key overrides."""
    return to_object(compose_config(*(f"policy.{o}" for o in overrides))).policy
