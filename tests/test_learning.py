"""Real learning runs through the CLI with fixed seeds; they assert returns, never times.

Random play scores about 22 on CartPole-v1.
"""

import json

import pytest

from conftest import run_rlrun


def _train(tmp_path, *overrides):
    run_dir = tmp_path / "run"
    result = run_rlrun("train", f"hydra.run.dir={run_dir}", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    return summary


def test_default_ppo_clip_solves_cartpole(tmp_path):
    """`rlrun train` with defaults: PPO-clip, CartPole-v1, 50k steps (about 3 s)."""
    assert _train(tmp_path, "seed=1")["eval_return_mean"] >= 475


def test_ppo_kl_solves_cartpole(tmp_path):
    assert _train(tmp_path, "algo=ppo_kl", "seed=1")["eval_return_mean"] >= 475


def test_pg_baseline_clearly_beats_random(tmp_path):
    summary = _train(tmp_path, "algo=pg_baseline", "seed=1")
    assert summary["eval_return_mean"] >= 100 and summary["train_return_recent"] >= 100


def test_vanilla_pg_clearly_beats_random(tmp_path):
    summary = _train(tmp_path, "algo=pg", "seed=1", "total_timesteps=100000")
    assert summary["eval_return_mean"] >= 100 and summary["train_return_recent"] >= 100


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
@pytest.mark.parametrize("algo", ["ppo_clip", "ppo_kl"])
def test_ppo_solves_cartpole_across_seeds(tmp_path, algo, seed):
    assert _train(tmp_path, f"algo={algo}", f"seed={seed}")["eval_return_mean"] >= 475


def test_ppo_clip_improves_clearly_on_pendulum(tmp_path):
    """Continuous control: random play scores about -1250 per episode on Pendulum-v1."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = _train(tmp_path, "env=Pendulum-v1", "seed=1", "total_timesteps=40000", "algo.num_minibatches=16")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    recent = [event.value for event in events.Scalars("rollout/recent_return")]
    assert recent[-1] >= recent[0] + 300
    assert summary["eval_return_mean"] >= -800
