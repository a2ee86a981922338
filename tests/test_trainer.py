"""The generic loop's collection on a real vector env (CartPole, NEXT_STEP autoreset)."""

import pytest
import torch

from helpers import ALGOS, compose_config
from rlrun.algos import ALGORITHMS
from rlrun.algos.pg import PG, PGBaseline
from rlrun.config import to_object
from rlrun.trainer import Trainer


def _trainer(tmp_path, *overrides):
    cfg = compose_config(*overrides)
    return Trainer(to_object(cfg), {}, tmp_path)


FIXED_ROLLOUTS = [name for name in ALGOS if not ALGORITHMS[name].whole_episodes]
WHOLE_EPISODES = [name for name in ALGOS if ALGORITHMS[name].whole_episodes]


@pytest.mark.parametrize("algo", FIXED_ROLLOUTS)
def test_fixed_rollouts_mask_reset_steps(tmp_path, algo):
    trainer = _trainer(tmp_path, f"algo={algo}", "algo.rollout_steps=200", "env.num_envs=4")
    episodes = trainer.collector.collect(trainer.policy, trainer.rollout)
    rollout = trainer.rollout
    ends = rollout.dones[:-1].nonzero()
    assert len(ends) > 0
    for t, n in ends.tolist():  # the step after a done is the env resetting
        assert not rollout.valid[t + 1, n] and rollout.rewards[t + 1, n] == 0
    assert int(rollout.valid.sum()) == 200 * 4 - len(ends) == episodes.steps
    assert rollout.valid[0].all()


@pytest.mark.parametrize("algo", WHOLE_EPISODES)
def test_whole_episode_rollouts_hold_one_complete_episode_per_env(tmp_path, algo):
    trainer = _trainer(tmp_path, f"algo={algo}", "env.num_envs=4")
    for _ in range(2):  # the second collection starts fresh episodes
        trainer.collector.collect(trainer.policy, trainer.rollout)
        rollout = trainer.rollout
        lengths = rollout.valid.sum(0)
        for n, length in enumerate(lengths.tolist()):
            assert rollout.valid[:length, n].all() and not rollout.valid[length:, n].any()
            assert rollout.dones[length - 1, n] and not rollout.dones[: length - 1, n].any()


def test_pg_baseline_with_every_switch_off_is_vanilla_pg(tmp_path):
    trainer = _trainer(tmp_path, "algo=pg_baseline", "algo.baseline=none", "algo.gamma=1", "algo.reward_to_go=false", "env.num_envs=3")
    trainer.collector.collect(trainer.policy, trainer.rollout)
    rollout = trainer.rollout
    vanilla, _ = PG(trainer.config.algo, trainer.policy).advantages(rollout)
    off, _ = trainer.algo.advantages(rollout)
    assert isinstance(trainer.algo, PGBaseline)
    assert torch.equal(vanilla[rollout.valid], off[rollout.valid])
