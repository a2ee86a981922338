"""The batched engine: runs trained side by side in one process, each still its own run."""

import itertools
import math
import os
import signal
import threading

import numpy as np
import pytest
import torch

from helpers import compose_config, read_summary, tb_events
from rlrun.checkpoint import load_checkpoint
from rlrun.lifecycle import RunInterrupted
from rlrun.trainer import Job, train, train_group

# The default CartPole preset, cut short: 2 updates of 32 envs x 32 steps per run.
SHORT = ["total_timesteps=2048", "eval_episodes=2"]


def _group(root, *jobs_overrides, signals=None):
    """Train one group, a job per tuple of overrides; returns its run directories and results."""
    run_dirs, jobs = [], []
    for i, overrides in enumerate(jobs_overrides):
        run_dir = root / f"run{i}"
        run_dir.mkdir(parents=True)
        run_dirs.append(run_dir)
        jobs.append(Job(compose_config(*overrides), run_dir, {"algo": "ppo_clip", "env": "CartPole-v1", "preset": "none"}))
    return run_dirs, train_group(jobs, signals)


def _policy(run_dir):
    return load_checkpoint(run_dir)["policy"]


def _assert_close_policies(a, b, **tolerance):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tolerance)


def test_a_run_trained_in_a_group_is_the_run_trained_alone_up_to_rounding(tmp_path):
    """One update of seed 2 in a group of three (other seeds, another lr and clip range) and
    alone: the same network up to float32 rounding. No state leaks between runs."""
    one_update = ["total_timesteps=1024", "eval_episodes=0"]
    group_dirs, _ = _group(
        tmp_path / "group", ("seed=1", *one_update), ("seed=2", *one_update), ("seed=3", "algo.lr=0.1", "algo.clip_eps=0.3", *one_update),
    )
    alone_dirs, _ = _group(tmp_path / "alone", ("seed=2", *one_update))
    _assert_close_policies(_policy(group_dirs[1]), _policy(alone_dirs[0]), rtol=1e-5, atol=1e-6)
    different = _policy(group_dirs[0])["actor.body.0.weight"] - _policy(group_dirs[1])["actor.body.0.weight"]
    assert different.abs().max() > 0.01  # each run its own initial weights


@pytest.mark.parametrize("algo, alone_overrides, other_overrides", [
    # whole episodes: the other run's episodes end at other steps than seed 2's
    ("pg", ["env.num_envs=4", "total_timesteps=250"], ["env.num_envs=4", "total_timesteps=250"]),  # seed 2's end first
    # seed 2 stops its epochs at once, the other run takes all of them
    ("ppo_clip", ["algo.target_kl=1e-9", "total_timesteps=3000"], ["algo.target_kl=null", "total_timesteps=3000"]),
], ids=["pg-whole-episodes", "ppo-clip-target-kl"])
def test_a_run_draws_its_randomness_as_alone_whatever_its_group_does(tmp_path, algo, alone_overrides, other_overrides):
    """Three updates of seed 2, alone and beside a run that acts or updates for a different
    number of steps: the same weights up to rounding (a run's generator advances only for
    what it does itself)."""
    budget = [f"algo={algo}", "eval_episodes=0", "checkpoint_interval=0"]
    group_dirs, _ = _group(tmp_path / "group", ("seed=1", *budget, *other_overrides), ("seed=2", *budget, *alone_overrides))
    alone_dirs, _ = _group(tmp_path / "alone", ("seed=2", *budget, *alone_overrides))
    assert read_summary(group_dirs[1])["updates"] == read_summary(alone_dirs[0])["updates"] >= 3
    _assert_close_policies(_policy(group_dirs[1]), _policy(alone_dirs[0]), rtol=1e-4, atol=1e-5)


def test_rerunning_a_group_gives_the_same_curves_and_weights(tmp_path):
    runs = [("seed=1", *SHORT), ("seed=2", "algo.target_kl=0.001", *SHORT)]
    first, _ = _group(tmp_path / "a", *runs)
    second, _ = _group(tmp_path / "b", *runs)
    for a, b in zip(first, second):
        for tag in ("train/kl", "train/policy_loss", "rollout/episodic_return", "eval/episodic_return"):
            assert [(e.step, e.value) for e in tb_events(a).Scalars(tag)] == [(e.step, e.value) for e in tb_events(b).Scalars(tag)]
        _assert_close_policies(_policy(a), _policy(b), rtol=0, atol=0)


def test_a_diverging_run_fails_alone_and_the_others_finish_unaffected(tmp_path):
    run_dirs, results = _group(tmp_path / "group", ("seed=1", "algo.lr=1e30", *SHORT), ("seed=2", *SHORT))
    failed, healthy = (read_summary(run_dir) for run_dir in run_dirs)
    assert failed["status"] == "failed" and "diverged" in failed["error"] and isinstance(results[0], Exception)
    assert healthy["status"] == "completed" and results[1] == healthy["eval_return_mean"]
    alone_dirs, _ = _group(tmp_path / "alone", ("seed=2", *SHORT))
    _assert_close_policies(_policy(run_dirs[1]), _policy(alone_dirs[0]), rtol=1e-4, atol=1e-5)


def test_each_run_stops_its_epochs_at_its_own_target_kl(tmp_path):
    run_dirs, _ = _group(tmp_path, ("seed=1", "algo.target_kl=1e-9", *SHORT), ("seed=1", "algo.target_kl=null", *SHORT))
    stopped, free = ([e.value for e in tb_events(run_dir).Scalars("train/epochs")] for run_dir in run_dirs)
    assert len(stopped) == len(free) >= 2
    assert set(stopped) == {1.0} and set(free) == {6.0}  # the preset's 6 epochs


def test_each_ppo_kl_run_adapts_its_own_beta(tmp_path):
    """Two runs from different beta_init: each beta follows the halving/doubling rule on its
    own run's measured KL (d_targ 0.01, bounds [0.3, 10] of configs/algo/ppo_kl.yaml)."""
    common = ["algo=ppo_kl", "algo.adaptive=true", *SHORT]
    run_dirs, _ = _group(tmp_path, ("seed=1", "algo.beta_init=1.0", *common), ("seed=1", "algo.beta_init=8.0", *common))
    for run_dir, beta_init in zip(run_dirs, (1.0, 8.0)):
        events = tb_events(run_dir)
        betas = [e.value for e in events.Scalars("train/kl_beta")]
        kls = [e.value for e in events.Scalars("train/kl")]
        expected = [beta_init]
        for kl in kls[:-1]:
            beta = expected[-1] / 2 if kl < 0.01 / 1.5 else expected[-1] * 2 if kl > 0.01 * 1.5 else expected[-1]
            expected.append(min(max(beta, 0.3), 10.0))
        assert len(betas) >= 3 and betas == pytest.approx(expected, rel=1e-6)


def test_a_stop_signal_checkpoints_every_run_and_one_resumes_alone(tmp_path):
    long = ["total_timesteps=1000000", "eval_episodes=2", "checkpoint_interval=0", "torch_compile=false"]  # no compile pause before the signal
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(RunInterrupted):
            run_dirs, _ = _group(tmp_path, ("seed=1", *long), ("seed=2", *long), ("seed=3", *long))
    finally:
        timer.cancel()
    run_dirs = sorted(tmp_path.iterdir())
    steps = []
    for run_dir in run_dirs:
        assert read_summary(run_dir)["status"] == "interrupted"
        steps.append(load_checkpoint(run_dir)["global_step"])
    assert 0 < steps[0] < 1_000_000
    resumed = run_dirs[1]
    budget = steps[1] + 2048
    train(compose_config("seed=2", f"total_timesteps={budget}", "eval_episodes=2", "checkpoint_interval=0", f"resume={resumed}"), resumed)
    summary = read_summary(resumed)
    assert summary["status"] == "completed" and summary["env_steps"] >= budget and summary["group_size"] == 1
    kl_steps = [e.step for e in tb_events(resumed).Scalars("train/kl")]
    assert kl_steps == sorted(set(kl_steps))  # one curve: nothing logged twice


def _permutation_p_value(a, b):
    """Two-sided exact permutation test of equal means of `a` and `b`."""
    pooled, observed = np.concatenate([a, b]), abs(np.mean(a) - np.mean(b))
    count = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        mask = np.zeros(len(pooled), dtype=bool)
        mask[list(chosen)] = True
        count += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-12
        total += 1
    return count / total


def test_final_returns_batched_and_alone_are_statistically_indistinguishable(tmp_path):
    """8 seeds on a budget where returns still spread (about 100-500): trained as one group
    and each alone, their final evaluation returns pass an exact permutation test of equal
    means (two-sided, p > 0.05; the note of the issue gives the p-value)."""
    budget = ["total_timesteps=6144", "eval_episodes=5", "eval_interval=0"]
    seeds = range(11, 19)
    _, batched = _group(tmp_path / "group", *[(f"seed={seed}", *budget) for seed in seeds])
    alone = [_group(tmp_path / f"alone{seed}", (f"seed={seed}", *budget))[1][0] for seed in seeds]
    assert all(math.isfinite(value) for value in batched + alone)
    assert np.std(alone) > 0  # the budget leaves spread to compare
    assert _permutation_p_value(np.array(batched), np.array(alone)) > 0.05
