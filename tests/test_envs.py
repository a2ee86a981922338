"""Every environment config with every algorithm; continuous actions; normalisation;
missing extras."""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal
from typer.testing import CliRunner

from helpers import ALGOS, collect, compose_config, group_trainer, read_summary, sample, small_overrides, tb_events
from rlrun.algos import ALGORITHMS
from rlrun.checkpoint import load_checkpoint
from rlrun.cli import app
from rlrun.config import to_object
from rlrun.envs import running_stats
from rlrun.errors import RLRunError
from rlrun.policies import CategoricalHead, GaussianHead
from rlrun.lifecycle import StopSignals
from rlrun.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The MuJoCo tasks share one path (continuous actions, normalisation, the MuJoCo preset):
# Hopper-v5 takes it in the default suite, the others in the slow one; every env config
# still composes in the default suite (test_config).
SLOW_ENVS = {"Walker2d-v5", "HalfCheetah-v5", "Ant-v5"}
ENVS = [
    pytest.param(env, marks=pytest.mark.slow(reason="another MuJoCo task on Hopper-v5's path")) if env in SLOW_ENVS else env
    for env in sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml"))
]
ID_OF = {"generic": "MountainCar-v0"}  # env=generic: any registered id, with generic defaults

# Diagnostics every run logs, and those its critic adds (exactly when the algorithm has one).
COMMON_TAGS = {"train/kl", "train/entropy", "train/learning_rate", "train/policy_loss", "perf/sps", "eval/episodic_return"}
CRITIC_TAGS = {"train/value_loss", "train/explained_variance"}
EPISODE_TAGS = {"rollout/episodic_return", "rollout/episodic_length"}  # once a training episode has ended
# What each algorithm adds (a newly registered algorithm is checked for the above only).
ALGO_TAGS = {
    "pg": {"train/grad_var"},
    "pg_baseline": {"train/grad_var"},
    "ppo_kl": {"train/kl_beta", "train/kl_penalty", "train/ratio_max", "train/ratio_min", "train/approx_kl"},
    "ppo_clip": {"train/clipfrac", "train/ratio_mean", "train/approx_kl"},
    "a2c": {"train/grad_norm"},
}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env", ENVS)
def test_every_env_runs_with_every_algorithm_and_logs_its_diagnostics(tmp_path, env, algo):
    """Every env config (and its tuned presets) composes with every algorithm and trains."""
    env_id = [f"env.id={ID_OF[env]}"] if env in ID_OF else []
    cfg = compose_config(f"algo={algo}", f"env={env}", *env_id, "total_timesteps=200", "eval_episodes=1", *small_overrides(algo))
    config = to_object(cfg)
    assert type(config.algo) is ALGORITHMS[algo].config_class and config.env.id == ID_OF.get(env, env)
    assert np.isfinite(train(cfg, tmp_path))
    summary = read_summary(tmp_path)
    assert (summary["status"], summary["algo"], summary["env"]) == ("completed", algo, config.env.id)
    assert load_checkpoint(tmp_path)["global_step"] == summary["env_steps"]
    events = tb_events(tmp_path)
    kl = [event.value for event in events.Scalars("train/kl")]
    assert len(kl) == summary["updates"] and all(np.isfinite(kl)) and kl[-1] > 0  # the updates moved the policy
    tags = set(events.Tags()["scalars"])
    assert COMMON_TAGS | ALGO_TAGS.get(algo, set()) <= tags
    assert (CRITIC_TAGS <= tags) == ALGORITHMS[algo].needs_critic(config.algo) == bool(CRITIC_TAGS & tags)
    assert (EPISODE_TAGS <= tags) == (summary["train_return_recent"] is not None) == bool(EPISODE_TAGS & tags)


def test_gaussian_head_matches_torch_distributions():
    """For each run of a group, with its own log sigma (-0.5 and 0.3)."""
    space = gym.spaces.Box(-2.0, 2.0, (2,))
    head = GaussianHead(space, log_std_init=-0.5, num_runs=2)
    with torch.no_grad():
        head.log_std[1] = 0.3
    mean = torch.tensor([[[0.3, -1.0]], [[0.5, 1.2]]])  # (R, B, size)
    dist = head.distribution(head(mean))
    action = torch.tensor([[[1.5, 0.2]], [[-0.4, 0.9]]])
    for run, log_std in enumerate((-0.5, 0.3)):
        reference = Normal(mean[run], torch.full_like(mean[run], np.exp(log_std)))
        assert torch.allclose(dist.log_prob(action)[run], reference.log_prob(action[run]).sum(-1))
        assert torch.allclose(dist.entropy()[run], reference.entropy().sum(-1))
        # by hand: log N(x; mu, s) = -(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2
        s = np.exp(log_std)
        by_hand = sum(
            -((x - m) ** 2) / (2 * s * s) - np.log(s) - 0.5 * np.log(2 * np.pi) for x, m in zip(action[run, 0].tolist(), mean[run, 0].tolist())
        )
        assert dist.log_prob(action)[run].item() == pytest.approx(by_hand, rel=1e-5)
    assert torch.equal(dist.mode, mean)
    # a group of one: run 0's numbers
    alone = GaussianHead(space, log_std_init=-0.5, num_runs=1)
    assert torch.equal(alone.distribution(alone(mean[:1])).log_prob(action[:1]), dist.log_prob(action)[:1])


def test_categorical_head_samples_its_own_distribution():
    """Acting samples by Gumbel-max, not through torch.distributions: the frequencies of
    200k draws must match softmax(logits), for each run of a group from its own generator,
    and run r's draws are the ones its generator gives it alone."""
    draws = 200_000
    head = CategoricalHead(gym.spaces.Discrete(3))
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], [[-1.0, 0.5, 3.0], [1.0, 0.0, 1.0]]])  # (R, 2 states, 3)
    params = logits.unsqueeze(1).repeat(1, draws, 1, 1)  # (R, draws, 2, 3)
    actions = sample(head, params, [0, 1])
    assert actions.shape == (2, draws, 2) and actions.dtype == head.action_dtype
    for run in range(2):
        for row in range(2):
            frequencies = torch.bincount(actions[run, :, row], minlength=3) / draws
            assert torch.allclose(frequencies, logits[run, row].softmax(-1), atol=4e-3), frequencies  # > 3.5 sd
        assert torch.equal(sample(head, params[run:run + 1], [run]), actions[run:run + 1])


def test_clipping_for_the_env_leaves_stored_actions_and_log_probs_alone(tmp_path):
    trainer = group_trainer(
        tmp_path, "env=Pendulum-v1", "policy.log_std_init=1.5", "env.num_envs=2", "algo.rollout_steps=64", runs=[["seed=1"], ["seed=2"]],
    )
    collect(trainer)
    rollout, policy = trainer.rollout, trainer.policy
    assert rollout.actions.shape == (2, 64, 2, 1)
    assert (rollout.actions.abs() > 2.0).any(3).any(2).any(1).all()  # sigma = e^1.5: many samples leave [-2, 2], in each run
    assert (np.abs(policy.head.to_env(rollout.actions.numpy())) <= 2.0).all()
    with torch.no_grad():
        recomputed = policy.distribution(rollout.dist_params).log_prob(rollout.actions)
    assert torch.allclose(recomputed, rollout.log_probs, atol=1e-5)


def test_normalisation_statistics_survive_a_checkpoint_and_reach_evaluation(tmp_path):
    # One cheap epoch per update: the statistics, not the learning, are under test. Two runs
    # (seeds 1 and 2): each keeps statistics of its own.
    trainer = group_trainer(
        tmp_path, "env=Pendulum-v1", "algo.rollout_steps=256", "algo.epochs=1", "algo.num_minibatches=4",
        "total_timesteps=2048", "eval_episodes=2", runs=[["seed=1"], ["seed=2"]],
    )
    trainer.run(StopSignals())
    saved_runs = []
    normalizers = trainer.collector.normalizers
    for i, run in enumerate(trainer.runs):
        saved = {name: running_stats(state) for name, state in load_checkpoint(run.run_dir)["collector"]["normalizers"].items()}
        assert set(saved) == {"obs", "return"}
        for name, live in (("obs", normalizers.obs), ("return", normalizers.returns)):
            assert saved[name].count == live.count[i].item() > 2000
            assert np.array_equal(saved[name].mean, live.mean[i]) and np.array_equal(saved[name].var, live.var[i])
        evaluated = trainer.collector.obs_stats(i)  # what the run's own evaluation normalised with
        assert np.array_equal(evaluated.mean, saved["obs"].mean) and evaluated.count == saved["obs"].count
        assert not np.allclose(saved["obs"].mean, 0)
        saved_runs.append(saved)
        # `rlrun eval` rebuilds the policy and normaliser from the checkpoint: same numbers as the run's own evaluation
        result = CliRunner().invoke(app, ["eval", str(run.run_dir), "--episodes", "2", "--seed", str(run.config.seed + 1_000_000)])
        summary_return = read_summary(run.run_dir)["eval_return_mean"]
        assert result.exit_code == 0 and f"return {summary_return:.2f}" in result.stdout
    assert not np.array_equal(saved_runs[0]["obs"].mean, saved_runs[1]["obs"].mean)


@pytest.mark.parametrize("env, module, extra", [("Hopper-v5", "mujoco", "mujoco"), ("LunarLander-v3", "Box2D", "box2d")])
def test_a_missing_extra_names_the_install_command(tmp_path, monkeypatch, env, module, extra):
    """As if `module` were not installed: it and the Gymnasium modules that imported it are
    unloaded, and importing it fails (monkeypatch puts them all back afterwards)."""
    family = f"gymnasium.envs.{extra}"
    for name in [name for name in sys.modules if name in (module, family) or name.startswith((f"{module}.", f"{family}."))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(RLRunError) as refusal:
        train(compose_config(f"env={env}", "total_timesteps=256", "env.num_envs=1", "algo.rollout_steps=256"), tmp_path)
    assert refusal.value.exit_code == 2
    assert f"pip install 'rlrun[{extra}]'" in str(refusal.value)


def test_envpool_when_missing_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "envpool", None)  # `import envpool` raises ImportError
    with pytest.raises(RLRunError) as refusal:
        train(compose_config("env.vectorization=envpool", "total_timesteps=256", "env.num_envs=8", "algo.rollout_steps=32"), tmp_path)
    assert refusal.value.exit_code == 2
    assert "pip install 'rlrun[envpool]'" in str(refusal.value)


def test_tuned_presets_apply_to_their_pair_only():
    hopper = to_object(compose_config("env=Hopper-v5"))
    assert (hopper.algo.rollout_steps, hopper.algo.num_minibatches, hopper.total_timesteps) == (2048, 32, 1_000_000)
    assert hopper.env.normalize_obs and hopper.env.num_envs == 1
    kl = to_object(compose_config("algo=ppo_kl", "env=Hopper-v5"))
    assert kl.algo.rollout_steps == 32  # no ppo_kl preset for Hopper: the algorithm's own defaults


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync", "async"])
def test_every_vectorisation_mode_runs(tmp_path, mode):
    trainer = group_trainer(
        tmp_path, f"env.vectorization={mode}", "env.num_envs=2", "algo.rollout_steps=64", "total_timesteps=256", "eval_episodes=1",
        runs=[["seed=1"], ["seed=2"]],
    )
    expected = {"vector_entry_point": "CartPoleVectorEnv", "sync": "SyncVectorEnv", "async": "AsyncVectorEnv"}[mode]
    assert [type(envs.unwrapped).__name__ for envs in trainer.collector.envs] == [expected] * 2
    trainer.run(StopSignals())
    for run in trainer.runs:
        assert np.isfinite(run.result)
        assert read_summary(run.run_dir)["status"] == "completed"
