"""env.vectorization=envpool: EnvPool's environments under rlrun's collector, on real runs;
the autoreset and seeding rlrun relies on; evaluation on Gymnasium's implementation; resume."""

import shutil

import numpy as np
import pytest
import torch

from helpers import collect, compose_config, group_trainer, read_summary, tb_events
from rlrun.checkpoint import load_checkpoint
from rlrun.config import EnvConfig, to_object
from rlrun.envs import SeededEnvPool, make_vector_env
from rlrun.errors import RLRunError
from rlrun.evaluation import evaluate_run
from rlrun.trainer import train

pytest.importorskip("envpool", reason="EnvPool is not installed (pip install 'rlrun[envpool]')")

# A couple of updates on each, with a short final evaluation.
RUNS = {
    "CartPole-v1": ["env=CartPole-v1", "env.num_envs=4", "algo.rollout_steps=64", "total_timesteps=512", "eval_episodes=2"],
    "Hopper-v5": [
        "env=Hopper-v5", "env.num_envs=2", "algo.rollout_steps=128", "algo.num_minibatches=4", "algo.epochs=2",
        "total_timesteps=512", "eval_episodes=2",
    ],
}


def _envpool_config(env_id: str, num_envs: int = 2) -> EnvConfig:
    return EnvConfig(id=env_id, num_envs=num_envs, vectorization="envpool", normalize_obs=False, normalize_reward=False)


@pytest.mark.parametrize("env", RUNS)
def test_a_run_on_envpool_writes_a_complete_run_directory(tmp_path, env):
    """Training steps EnvPool's envs; the final evaluation plays Gymnasium's, and `rlrun eval`
    of the checkpoint gives the same number; no environment snapshot (the pool does not pickle)."""
    cfg = compose_config(*RUNS[env], "env.vectorization=envpool")
    assert to_object(cfg).env.vectorization == "envpool"
    result = train(cfg, tmp_path)
    summary = read_summary(tmp_path)
    assert summary["status"] == "completed" and summary["env_steps"] >= 512 and np.isfinite(result)
    assert all((tmp_path / name).is_file() for name in ("config.yaml", "checkpoint.pt", "summary.json"))
    assert not (tmp_path / "envs.snapshot").exists()
    assert {"rollout/episodic_return", "train/kl", "eval/episodic_return"} <= set(tb_events(tmp_path).Tags()["scalars"])
    assert evaluate_run(tmp_path, episodes=2).mean() == summary["eval_return_mean"]


@pytest.mark.parametrize("env", RUNS)
def test_envpool_episodes_look_like_gymnasiums(tmp_path, env):
    """The same initial policy collects episodes of about the same length and return from
    EnvPool's implementation as from Gymnasium's (their initial states differ: not the same
    random generator), with the raw rewards of each: CartPole pays 1 per step."""
    stats = {}
    for vectorization in ("envpool", "sync"):
        trainer = group_trainer(tmp_path / vectorization, *RUNS[env], f"env.vectorization={vectorization}", "algo.rollout_steps=512", "total_timesteps=4096")
        episodes = collect(trainer)[0]
        trainer.collector.close(0)
        assert len(episodes.returns) >= 10
        stats[vectorization] = np.mean(episodes.lengths), np.mean(episodes.returns)
        if env == "CartPole-v1":
            assert episodes.returns == [float(length) for length in episodes.lengths]
    (envpool_length, envpool_return), (gym_length, gym_return) = stats["envpool"], stats["sync"]
    assert 0.7 < envpool_length / gym_length < 1.4 and 0.7 < envpool_return / gym_return < 1.4, stats


def test_envpool_autoresets_at_the_next_step_as_rlrun_assumes():
    """The step after a done returns the next episode's first observation, reward 0, not done."""
    envs = make_vector_env(_envpool_config("CartPole-v1"))
    assert isinstance(envs, SeededEnvPool)
    envs.reset(seed=3)
    left, ended = np.zeros(2, dtype=np.int64), np.zeros(2, dtype=bool)
    while not ended.any():  # always pushing left, an episode fails within a few dozen steps
        _, _, terminated, truncated, _ = envs.step(left)
        ended = terminated | truncated
    obs, rewards, terminated, truncated, _ = envs.step(left)
    assert not (terminated | truncated)[ended].any() and (rewards[ended] == 0).all()
    assert (np.abs(obs[ended]) <= 0.05).all()  # CartPole's initial states: uniform in [-0.05, 0.05]
    envs.close()


def test_envpool_is_seeded_as_gymnasium_seeds():
    """reset(seed=s) starts sub-env i from seed s + i, whatever the pool did before; an unseeded
    reset continues the random stream."""
    envs, other = make_vector_env(_envpool_config("Hopper-v5")), make_vector_env(_envpool_config("Hopper-v5", num_envs=1))
    first, _ = envs.reset(seed=5)
    envs.step(np.zeros((2, 3)))
    again, _ = envs.reset(seed=5)
    assert np.array_equal(first, again) and not np.array_equal(first[0], first[1])
    assert np.array_equal(other.reset(seed=6)[0][0], first[1])
    assert not np.array_equal(envs.reset()[0], first)
    envs.close()
    other.close()


def test_an_id_envpool_lacks_is_refused_with_close_matches():
    with pytest.raises(RLRunError, match=r"EnvPool has no environment 'Hoper-v5'.*Did you mean: .*Hopper-v5") as refusal:
        make_vector_env(_envpool_config("Hoper-v5"))
    assert refusal.value.exit_code == 2


def test_a_run_on_envpool_resumes_with_fresh_seeded_episodes(tmp_path):
    """No snapshot: the resumed run starts fresh episodes seeded by seed + global_step, so two
    resumes of one checkpoint end alike."""
    overrides = [*RUNS["CartPole-v1"], "env.vectorization=envpool"]
    first = tmp_path / "first"
    first.mkdir()
    train(compose_config(*overrides), first)
    second = shutil.copytree(first, tmp_path / "second")
    for run_dir in (first, second):
        train(compose_config(*overrides, "total_timesteps=1024", f"resume={run_dir}"), run_dir)
        assert read_summary(run_dir)["status"] == "completed" and read_summary(run_dir)["env_steps"] >= 1024
    policies = [load_checkpoint(run_dir)["policy"] for run_dir in (first, second)]
    assert all(torch.equal(policies[0][name], policies[1][name]) for name in policies[0])
