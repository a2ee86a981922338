"""Every environment config with every algorithm; continuous actions; normalisation;
missing extras."""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Normal
from typer.testing import CliRunner

from helpers import ALGOS, compose_config, read_summary, small_overrides, tb_events
from rlrun.algos import ALGORITHMS
from rlrun.checkpoint import load_checkpoint
from rlrun.cli import app
from rlrun.config import to_object
from rlrun.envs import normalizer_stats, running_stats
from rlrun.errors import RLRunError
from rlrun.policies import CategoricalHead, GaussianHead
from rlrun.lifecycle import StopSignals
from rlrun.trainer import Trainer, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENVS = sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml"))
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
    space = gym.spaces.Box(-2.0, 2.0, (2,))
    head = GaussianHead(space, log_std_init=-0.5)
    mean = torch.tensor([[0.3, -1.0]])
    dist = head.distribution(head(mean))
    reference = Normal(mean, torch.full_like(mean, np.exp(-0.5)))
    action = torch.tensor([[1.5, 0.2]])
    assert torch.allclose(dist.log_prob(action), reference.log_prob(action).sum(-1))
    assert torch.allclose(dist.entropy(), reference.entropy().sum(-1))
    # by hand: log N(x; mu, s) = -(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2
    s = np.exp(-0.5)
    by_hand = sum(-((x - m) ** 2) / (2 * s * s) - np.log(s) - 0.5 * np.log(2 * np.pi) for x, m in [(1.5, 0.3), (0.2, -1.0)])
    assert dist.log_prob(action).item() == pytest.approx(by_hand, rel=1e-5)
    assert torch.equal(dist.mode, mean)


def test_categorical_head_samples_its_own_distribution():
    """Acting samples by Gumbel-max, not through torch.distributions: the frequencies of
    200k draws must match softmax(logits)."""
    torch.manual_seed(0)
    draws = 200_000
    head = CategoricalHead(gym.spaces.Discrete(3))
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    actions = head.sample(logits.repeat(draws, 1, 1))
    assert actions.shape == (draws, 2) and actions.dtype == head.action_dtype
    for row in range(2):
        frequencies = torch.bincount(actions[:, row], minlength=3) / draws
        assert torch.allclose(frequencies, logits[row].softmax(-1), atol=4e-3), frequencies  # > 3.5 sd


def test_clipping_for_the_env_leaves_stored_actions_and_log_probs_alone(tmp_path):
    cfg = compose_config("env=Pendulum-v1", "policy.log_std_init=1.5", "env.num_envs=2", "algo.rollout_steps=64")
    trainer = Trainer(to_object(cfg), {}, tmp_path)
    trainer.collector.collect(trainer.policy, trainer.rollout)
    rollout, policy = trainer.rollout, trainer.policy
    assert (rollout.actions.abs() > 2.0).any()  # sigma = e^1.5: many samples leave [-2, 2]
    assert (np.abs(policy.head.to_env(rollout.actions)) <= 2.0).all()
    with torch.no_grad():
        recomputed = policy.distribution(rollout.dist_params).log_prob(rollout.actions)
    assert torch.allclose(recomputed, rollout.log_probs, atol=1e-5)


def test_normalisation_statistics_survive_a_checkpoint_and_reach_evaluation(tmp_path):
    # One cheap epoch per update: the statistics, not the learning, are under test.
    cfg = compose_config("env=Pendulum-v1", "algo.rollout_steps=256", "algo.epochs=1", "algo.num_minibatches=4", "total_timesteps=2048", "eval_episodes=2")
    config = to_object(cfg)
    trainer = Trainer(config, OmegaConf.to_container(cfg, resolve=True), tmp_path)
    trainer.run(StopSignals())
    live = normalizer_stats(trainer.collector.envs)
    saved = {name: running_stats(state) for name, state in load_checkpoint(tmp_path)["collector"]["normalizers"].items()}
    assert set(saved) == {"obs", "return"}
    for name in ("obs", "return"):
        assert saved[name].count == live[name].count > 2000
        assert np.array_equal(saved[name].mean, live[name].mean) and np.array_equal(saved[name].var, live[name].var)
    assert not np.allclose(saved["obs"].mean, 0)
    # `rlrun eval` rebuilds the policy and normaliser from the checkpoint: same numbers as the run's own evaluation
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--episodes", "2", "--seed", str(config.seed + 1_000_000)])
    summary_return = read_summary(tmp_path)["eval_return_mean"]
    assert result.exit_code == 0 and f"return {summary_return:.2f}" in result.stdout


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


def test_tuned_presets_apply_to_their_pair_only():
    hopper = to_object(compose_config("env=Hopper-v5"))
    assert (hopper.algo.rollout_steps, hopper.algo.num_minibatches, hopper.total_timesteps) == (2048, 32, 1_000_000)
    assert hopper.env.normalize_obs and hopper.env.num_envs == 1
    kl = to_object(compose_config("algo=ppo_kl", "env=Hopper-v5"))
    assert kl.algo.rollout_steps == 32  # no ppo_kl preset for Hopper: the algorithm's own defaults


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync", "async"])
def test_every_vectorisation_mode_runs(tmp_path, mode):
    cfg = compose_config(f"env.vectorization={mode}", "env.num_envs=2", "algo.rollout_steps=64", "total_timesteps=256", "eval_episodes=1")
    trainer = Trainer(to_object(cfg), {}, tmp_path)
    expected = {"vector_entry_point": "CartPoleVectorEnv", "sync": "SyncVectorEnv", "async": "AsyncVectorEnv"}[mode]
    assert type(trainer.collector.envs.unwrapped).__name__ == expected
    assert np.isfinite(trainer.run(StopSignals()))
    assert read_summary(tmp_path)["status"] == "completed"
