"""Plain helpers shared by the tests: import them with `from helpers import ...`.

(tests/ is on sys.path through `pythonpath = ["tests"]` in pyproject.toml.) Fixtures live in
conftest.py; nothing here is a fixture.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from rlrun.algos import ALGORITHMS, config_classes
from rlrun.config import register_schemas, to_object

REPO = Path(__file__).resolve().parents[1]
RLRUN = Path(sys.executable).with_name("rlrun")  # the installed console script

# A run that finishes in about a second: 2 updates of 8 envs x 16 steps.
TINY = ["total_timesteps=256", "env.num_envs=8", "algo.rollout_steps=16", "eval_episodes=2"]

# The session's one real `rlrun train` run (the `cli_run` fixture): the default PPO-clip on
# CartPole-v1 for 2 updates of 32 envs x 32 steps, a checkpoint after each (so a previous one
# is kept too), and the default final evaluation of 10 episodes.
CLI_RUN = ["total_timesteps=2048", "checkpoint_interval=1"]

ALGOS = sorted(ALGORITHMS)  # every registered algorithm: parametrise over this, never a literal list


def run_rlrun(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `rlrun` console script in a subprocess."""
    return subprocess.run(
        [str(RLRUN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def compose_config(*overrides: str) -> DictConfig:
    """The composed config, as `rlrun train` would see it (a fresh copy: callers may change it)."""
    return copy.deepcopy(_composed(overrides))


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    # Hydra's composition costs about 0.15 s; many tests compose the same overrides.
    register_schemas(config_classes())
    with initialize_config_module(config_module="rlrun.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def algo_config(name: str, *overrides: str):
    """The config object of algorithm `name` as its yaml sets it, with `algo.`-key overrides."""
    return to_object(compose_config(f"algo={name}", *(f"algo.{o}" for o in overrides))).algo


def policy_config(*overrides: str):
    """The policy config as configs/config.yaml sets it, with `policy.`-key overrides."""
    return to_object(compose_config(*(f"policy.{o}" for o in overrides))).policy


def small_overrides(algo: str) -> list[str]:
    """Overrides that keep one update of `algo` to a few hundred env steps on any environment,
    whatever the env's or a tuned preset's sizes; derived from the algorithm's declarations, so
    a newly registered algorithm needs no entry here."""
    cls = ALGORITHMS[algo]
    keys = {field.name for field in fields(cls.config_class)}
    overrides = ["env.num_envs=1" if cls.whole_episodes else "env.num_envs=2"]
    if "rollout_steps" in keys:
        overrides.append("algo.rollout_steps=64")
    if "num_minibatches" in keys:
        overrides.append("algo.num_minibatches=2")
    return overrides


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def tb_events(run_dir: Path):
    """The run's TensorBoard events, loaded (`.Tags()`, `.Scalars(tag)`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tb"))
    events.Reload()
    return events


def group_trainer(root: Path, *overrides: str, runs: list[list[str]] | None = None):
    """A `Trainer` for a group of runs built as `train_group` builds one (without starting
    it): run i composed from `overrides` then `runs[i]` (one run with no extra overrides by
    default), its run directory root / f"run{i}". The runs' extra overrides may differ only in
    batchable keys (rlrun.grouping)."""
    from omegaconf import OmegaConf

    from rlrun.trainer import Run, Trainer

    group = []
    for i, extra in enumerate(runs or [[]]):
        cfg = compose_config(*overrides, *extra)
        run_dir = Path(root) / f"run{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        group.append(Run(i, to_object(cfg), resolved, run_dir, {}, None))
    return Trainer(group)


def collect(trainer, active=None):
    """One collection of every run of `trainer` (or of those `active`, a list of bools): the
    runs' `Episodes`; the rollout is `trainer.rollout`."""
    import numpy as np

    active = np.ones(len(trainer.runs), dtype=bool) if active is None else np.asarray(active, dtype=bool)
    return trainer.collector.collect(trainer.policy, trainer.rollout, active, trainer.generators)


def generators(*seeds: int) -> list:
    """One seeded torch.Generator per run."""
    import torch

    return [torch.Generator().manual_seed(seed) for seed in seeds]


def sample(head, dist_params, seeds: list[int]):
    """Actions drawn as acting draws them (`head.noise`, `head.sample`) for (R, ..., P)
    `dist_params`, run r's from a generator seeded by `seeds[r]`, as a tensor."""
    import torch

    noise = head.noise(generators(*seeds), list(range(len(seeds))), tuple(dist_params.shape[1:-1]))
    return torch.from_numpy(head.sample(dist_params.detach().numpy(), noise))
