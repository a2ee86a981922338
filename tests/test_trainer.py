"""The generic loop's collection on a real vector env (CartPole, NEXT_STEP autoreset), for a
group of one and for two runs side by side (their own seeds and hyperparameters)."""

import pytest
import torch

from helpers import ALGOS, collect, generators, group_trainer
from rlrun.algos import ALGORITHMS
from rlrun.algos.pg import PG, PGBaseline

FIXED_ROLLOUTS = [name for name in ALGOS if not ALGORITHMS[name].whole_episodes]
WHOLE_EPISODES = [name for name in ALGOS if ALGORITHMS[name].whole_episodes]
TWO_RUNS = [["seed=1", "algo.lr=1e-3"], ["seed=2", "algo.lr=3e-3"]]


@pytest.mark.parametrize("runs", [[[]], TWO_RUNS], ids=["one_run", "two_runs"])
@pytest.mark.parametrize("algo", FIXED_ROLLOUTS)
def test_fixed_rollouts_mask_reset_steps(tmp_path, algo, runs):
    trainer = group_trainer(tmp_path, f"algo={algo}", "algo.rollout_steps=200", "env.num_envs=4", runs=runs)
    episodes = collect(trainer)
    rollout = trainer.rollout
    assert rollout.valid.shape == (len(runs), 200, 4)
    for run, run_episodes in enumerate(episodes):
        valid, dones, rewards = rollout.valid[run], rollout.dones[run], rollout.rewards[run]
        ends = dones[:-1].nonzero()
        assert len(ends) > 0
        for t, n in ends.tolist():  # the step after a done is the env resetting
            assert not valid[t + 1, n] and rewards[t + 1, n] == 0
        assert int(valid.sum()) == 200 * 4 - len(ends) == run_episodes.steps
        assert valid[0].all()
    if len(runs) == 2:  # each run's environments are seeded by its own seed
        assert not torch.equal(rollout.dones[0], rollout.dones[1])


@pytest.mark.parametrize("runs", [[[]], TWO_RUNS], ids=["one_run", "two_runs"])
@pytest.mark.parametrize("algo", WHOLE_EPISODES)
def test_whole_episode_rollouts_hold_one_complete_episode_per_env(tmp_path, algo, runs):
    trainer = group_trainer(tmp_path, f"algo={algo}", "env.num_envs=4", runs=runs)
    for _ in range(2):  # the second collection starts fresh episodes
        episodes = collect(trainer)
        rollout = trainer.rollout
        for run in range(len(runs)):
            valid, dones = rollout.valid[run], rollout.dones[run]
            lengths = valid.sum(0)
            for n, length in enumerate(lengths.tolist()):
                assert valid[:length, n].all() and not valid[length:, n].any()
                assert dones[length - 1, n] and not dones[: length - 1, n].any()
            assert episodes[run].steps == int(lengths.sum()) and len(episodes[run].returns) == 4


def test_an_inactive_run_is_not_stepped(tmp_path):
    """A run that has ended (finished or failed) takes no part in a collection: every step of
    it is invalid and its environments stay where they were; the other run collects as usual."""
    trainer = group_trainer(tmp_path, "algo=ppo_clip", "algo.rollout_steps=50", "env.num_envs=2", runs=TWO_RUNS)
    collect(trainer)
    before = trainer.collector.state_dict(0)
    episodes = collect(trainer, active=[False, True])
    rollout = trainer.rollout
    assert not rollout.valid[0].any() and episodes[0].steps == 0 and episodes[0].returns == []
    assert episodes[1].steps == int(rollout.valid[1].sum()) > 0
    assert not torch.equal(trainer.collector.state_dict(1)["obs"], rollout.obs[1, 0])  # run 1 did step
    after = trainer.collector.state_dict(0)
    assert torch.equal(after["obs"], before["obs"]) and torch.equal(after["prev_dones"], before["prev_dones"])


def test_pg_baseline_with_every_switch_off_is_vanilla_pg(tmp_path):
    for runs in ([[]], [["seed=1"], ["seed=2"]]):
        trainer = group_trainer(
            tmp_path / str(len(runs)), "algo=pg_baseline", "algo.baseline=none", "algo.gamma=1", "algo.reward_to_go=false",
            "env.num_envs=3", runs=runs,
        )
        collect(trainer)
        rollout = trainer.rollout
        configs = [run.config.algo for run in trainer.runs]
        vanilla, _ = PG(configs, trainer.policy, generators(*range(len(runs)))).advantages(rollout)
        off, _ = trainer.algo.advantages(rollout)
        assert isinstance(trainer.algo, PGBaseline)
        assert torch.equal(vanilla[rollout.valid], off[rollout.valid])
