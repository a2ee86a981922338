"""The collector's normalisation and episode statistics against Gymnasium's own wrappers
(NormalizeObservation, NormalizeReward, RecordEpisodeStatistics) on real environment streams:
the same numbers, for each run of a group; frozen statistics in evaluation; exact resume."""

import logging

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward, RecordEpisodeStatistics

from helpers import collect, compose_config, group_trainer, read_summary
from rlrun.checkpoint import load_checkpoint, save_checkpoint
from rlrun.evaluation import evaluate
from rlrun.policies import Acting
from rlrun.trainer import train

# Two runs of a group, each with its own seed and discount (NormalizeReward's gamma).
RUNS = [["seed=1", "algo.gamma=0.99"], ["seed=2", "algo.gamma=0.9"]]
NORMALIZED = ["env.normalize_obs=true", "env.normalize_reward=true", "algo.epochs=1", "algo.num_minibatches=2"]
# Terminations with float32 observations (CartPole's numpy-vectorised env), truncations only
# (Pendulum, sync), float64 observations and a single env (Hopper, sync).
STREAMS = {
    "CartPole-v1": ["env.num_envs=4", "algo.rollout_steps=128"],
    "Pendulum-v1": ["env.num_envs=3", "algo.rollout_steps=150"],
    "Hopper-v5": ["env.num_envs=1", "algo.rollout_steps=300"],
}


def _gymnasium_reference(trainer, run):
    """Run `run`'s environments as rlrun wrapped them before the collector normalised: Gymnasium's
    wrappers around the same vector env, reset with the same seed."""
    config = trainer.runs[run].config
    envs = RecordEpisodeStatistics(gym.make_vec(config.env.id, num_envs=config.env.num_envs, vectorization_mode=config.env.vectorization))
    envs = NormalizeReward(NormalizeObservation(envs), gamma=config.algo.gamma)
    first_obs, _ = envs.reset(seed=config.seed)
    return envs, first_obs


@pytest.mark.parametrize("env", STREAMS)
def test_the_collector_normalises_as_gymnasiums_wrappers_do(tmp_path, env):
    """Two collections (episodes and returns carried over between them) of a group of two
    runs; each run's observations, rewards, episode returns and statistics equal those of
    Gymnasium's wrappers fed the same actions, to the bit."""
    trainer = group_trainer(tmp_path, f"env={env}", *NORMALIZED, *STREAMS[env], runs=RUNS)
    collector, rollout, head = trainer.collector, trainer.rollout, trainer.policy.head
    references = [_gymnasium_reference(trainer, run) for run in range(2)]
    obs = [first_obs for _, first_obs in references]
    finished = [0, 0]
    for _ in range(2):
        episodes = collect(trainer)
        for run, (envs, _) in enumerate(references):
            returns = []
            for t in range(rollout.steps):
                assert np.array_equal(rollout.obs[run, t].numpy(), obs[run]), (run, t)
                obs[run], rewards, terminated, truncated, info = envs.step(head.to_env(rollout.actions[run, t].numpy()))
                assert np.array_equal(rollout.rewards[run, t].numpy(), rewards.astype(np.float32)), (run, t)
                assert np.array_equal(rollout.dones[run, t].numpy(), terminated | truncated)
                if "episode" in info:
                    returns += info["episode"]["r"][info["_episode"]].tolist()
            assert episodes[run].returns == returns
            finished[run] += len(returns)
    assert all(finished)  # the stream did end episodes
    normalizers = collector.normalizers
    for run, (envs, _) in enumerate(references):
        obs_rms, return_rms = envs.env.obs_rms, envs.return_rms
        assert normalizers.obs.mean.dtype == obs_rms.mean.dtype
        for ours, theirs in ((normalizers.obs, obs_rms), (normalizers.returns, return_rms)):
            assert np.array_equal(ours.mean[run], theirs.mean) and np.array_equal(ours.var[run], theirs.var)
            assert ours.count[run].item() == theirs.count
        assert np.array_equal(normalizers.discounted_returns[run], envs.accumulated_reward)
        envs.close()


def test_evaluation_normalises_with_the_runs_statistics_frozen(tmp_path):
    """`evaluate` plays as Gymnasium's NormalizeObservation with each run's statistics frozen."""
    trainer = group_trainer(tmp_path, "env=Pendulum-v1", *NORMALIZED, *STREAMS["Pendulum-v1"], runs=RUNS)
    collect(trainer)
    policy, collector, config = trainer.policy, trainer.collector, trainer.runs[0].config
    seeds, episodes = {0: 7, 1: 8}, 3
    stats = {run: collector.obs_stats(run) for run in seeds}
    returns = evaluate(policy, config.env, episodes, seeds, stats)
    for run, seed in seeds.items():
        envs = NormalizeObservation(gym.make_vec(config.env.id, num_envs=episodes))
        envs.obs_rms, envs.update_running_mean = stats[run], False
        obs, _ = envs.reset(seed=seed)
        total, running = np.zeros(episodes), np.ones(episodes, dtype=bool)
        while running.any():
            batch = np.zeros((2, *obs.shape), dtype=np.float32)
            batch[run] = obs
            actions = policy.head.to_env(policy.head.sample(Acting(policy.actor)(batch), None))[run]  # the mode, as acting computes it
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            total += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
        assert np.array_equal(np.sort(returns[run]), np.sort(total))
        envs.close()
    assert not np.array_equal(stats[0].mean, stats[1].mean)


# Pendulum with both normalisers, 128 steps per env per update: episodes (200 steps, 3 in each
# of 2 envs by the end) and discounted returns run across the checkpoint of the interrupted run.
# A constant lr: an annealed one follows total_timesteps, which the two runs set differently.
RESUMABLE = ["env=Pendulum-v1", *NORMALIZED, "env.num_envs=2", "algo.rollout_steps=128", "algo.anneal_lr=false", "eval_episodes=1"]


def _resume(run_dir, total_timesteps):
    return train(compose_config(*RESUMABLE, f"total_timesteps={total_timesteps}", f"resume={run_dir}"), run_dir)


def test_resume_continues_normalisation_and_episodes_exactly(tmp_path):
    """Stopped at 512 steps and resumed to 1,024, a run ends exactly as one trained to 1,024
    at once: the statistics, the discounted returns and the episodes in progress travel with
    the checkpoint (the environments themselves in the snapshot)."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference.mkdir()
    resumed.mkdir()
    train(compose_config(*RESUMABLE, "total_timesteps=1024"), reference)
    train(compose_config(*RESUMABLE, "total_timesteps=512"), resumed)
    assert (resumed / "envs.snapshot").is_file()
    _resume(resumed, 1024)
    expected, final = load_checkpoint(reference), load_checkpoint(resumed)
    assert final["global_step"] == expected["global_step"] >= 1024
    assert final["recent_returns"] == expected["recent_returns"] and len(expected["recent_returns"]) == 6
    assert final["collector"]["normalizers"] == expected["collector"]["normalizers"]
    for key in ("obs", "discounted_returns", "episode_returns", "episode_lengths"):
        assert torch.equal(final["collector"][key], expected["collector"][key]), key
    assert all(torch.equal(final["policy"][name], expected["policy"][name]) for name in expected["policy"])


def test_the_checkpoint_format_of_the_statistics_is_unchanged_and_old_snapshots_load(tmp_path, caplog):
    """The statistics are saved as before (plain lists and floats by name); a checkpoint written
    before the collector normalised (its snapshot holds Gymnasium's wrappers, no episode
    accumulators) resumes with fresh episodes."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(compose_config(*RESUMABLE, "total_timesteps=256"), run_dir)
    checkpoint = load_checkpoint(run_dir)
    normalizers = checkpoint["collector"]["normalizers"]
    assert set(normalizers) == {"obs", "return"}
    assert all(isinstance(value, float) for value in normalizers["obs"]["mean"] + normalizers["obs"]["var"])
    assert isinstance(normalizers["return"]["mean"], float) and isinstance(normalizers["return"]["count"], float)

    old = {**checkpoint, "collector": {k: checkpoint["collector"][k] for k in ("obs", "prev_dones", "collecting", "normalizers")}}
    wrapped = NormalizeReward(NormalizeObservation(RecordEpisodeStatistics(gym.make_vec("Pendulum-v1", num_envs=2))))
    save_checkpoint(run_dir, old, cloudpickle.dumps(wrapped))
    with caplog.at_level(logging.WARNING):
        _resume(run_dir, 512)
    assert "predates the collector's normalisation; fresh episodes" in caplog.text
    assert read_summary(run_dir)["status"] == "completed" and load_checkpoint(run_dir)["global_step"] >= 512
