"""Real learning runs through the CLI with fixed seeds; they assert returns, never times."""

import json

import pytest

from conftest import run_rlrun


def _train(tmp_path, *overrides):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", f"hydra.run.dir={run_dir}", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads((run_dir / "summary.json").read_text())


def test_default_ppo_clip_solves_cartpole(tmp_path):
    """`rlrun train` with defaults: PPO-clip, CartPole-v1, 50k steps (about 8 s)."""
    summary = _train(tmp_path, "seed=1")
    assert summary["eval_return_mean"] >= 475  # random play scores about 22


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_default_ppo_clip_solves_cartpole_across_seeds(tmp_path, seed):
    assert _train(tmp_path, f"seed={seed}")["eval_return_mean"] >= 475
