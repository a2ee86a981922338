"""Every preset for a classic-control environment solves it: at least 4 of seeds 1-5, trained
together through the batched launcher, reach the env's solved_return in their final
deterministic evaluation. The presets are found in configs/tuned/ (a new one is tested
without editing this file); scripts/presets.py writes the same check for every env into
docs/benchmarks.md."""

import json

import gymnasium as gym
import pytest
from omegaconf import OmegaConf

from helpers import REPO, run_rlrun

SEEDS = "1,2,3,4,5"


def classic_control_presets() -> list[tuple[str, str]]:
    """(algo, env) of every preset whose env is one of Gymnasium's classic-control tasks."""
    pairs = []
    for path in sorted((REPO / "configs" / "tuned").glob("*.yaml")):
        algo, _, env_id = path.stem.rpartition("_")  # algorithm names hold "_", env ids do not
        if env_id in gym.registry and gym.spec(env_id).entry_point.startswith("gymnasium.envs.classic_control"):
            pairs.append((algo, env_id))
    return pairs


def test_the_classic_control_presets_are_found():
    assert ("ppo_clip", "CartPole-v1") in classic_control_presets()
    assert {env_id for _, env_id in classic_control_presets()} >= {"CartPole-v1", "Acrobot-v1", "MountainCarContinuous-v0", "Pendulum-v1"}


@pytest.mark.slow(reason="5 seeds at the preset's whole budget: 10 s (CartPole) to about 4 minutes (Pendulum) on 2 cores")
@pytest.mark.parametrize(("algo", "env_id"), classic_control_presets())
def test_a_classic_control_preset_solves_its_environment(algo, env_id, tmp_path):
    result = run_rlrun("train", "-m", f"algo={algo}", f"env={env_id}", f"seed={SEEDS}", "hydra/launcher=batched",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr
    summaries = [json.loads(path.read_text()) for path in (tmp_path / "sweep").glob("*/summary.json")]
    assert [summary["status"] for summary in summaries] == ["completed"] * 5
    solved_at = OmegaConf.load(REPO / "configs" / "env" / f"{env_id}.yaml").solved_return
    finals = sorted(summary["eval_return_mean"] for summary in summaries)
    assert sum(final >= solved_at for final in finals) >= 4, f"{algo} on {env_id}: final evaluations {finals}, solved at {solved_at}"
