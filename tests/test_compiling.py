"""torch_compile: the compiled minibatch step takes the eager step's arithmetic (up to
rounding), and the rule that decides when a run compiles."""

import math

import pytest
import torch

from helpers import collect, compose_config, group_trainer
from rlrun.algos import ALGORITHMS
from rlrun.compiling import AUTO_MIN_GRADIENT_STEPS, has_cpp_compiler, should_compile
from rlrun.config import to_object
from rlrun.errors import RLRunError

needs_compiler = pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile needs a C++ compiler on the CPU")

# Two runs of a group, each its own lr and clip range; Pendulum: the Gaussian head.
GROUP = ["env=Pendulum-v1", "env.num_envs=2", "algo.rollout_steps=64", "algo.num_minibatches=4", "algo.epochs=2"]
RUNS = [["seed=1", "algo.lr=1e-3", "algo.clip_eps=0.2"], ["seed=2", "algo.lr=3e-4", "algo.clip_eps=0.1"]]


def _updates(tmp_path, compiled: bool, runs: list[list[str]], updates: int = 2):
    trainer = group_trainer(tmp_path, *GROUP, f"torch_compile={str(compiled).lower()}", runs=runs)
    assert trainer.compiled is compiled
    stats = []
    for _ in range(updates):
        collect(trainer)
        stats.append(trainer.update())
    return trainer, stats


def _assert_same_run(compiled, eager, compiled_stats, eager_stats):
    for name, param in compiled.policy.named_parameters():
        assert torch.allclose(param, dict(eager.policy.named_parameters())[name], atol=1e-5), name
    for ours, theirs in zip(compiled_stats, eager_stats):
        for key in ("policy_loss", "value_loss", "approx_kl", "grad_norm", "clipfrac", "epochs", "kl"):
            assert torch.allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-6), key


@needs_compiler
@pytest.mark.slow(reason="compiles PPO-clip's step (5-30 s): the default suite's budget")
def test_a_compiled_update_equals_the_eager_one_up_to_rounding(tmp_path):
    """Same seeds, same rollouts: after two updates of 8 minibatch steps each, every parameter
    and every diagnostic of both runs agrees with the eager group's; and a compiled rerun is
    the same to the bit."""
    compiled, compiled_stats = _updates(tmp_path / "compiled", True, RUNS)
    eager, eager_stats = _updates(tmp_path / "eager", False, RUNS)
    _assert_same_run(compiled, eager, compiled_stats, eager_stats)
    assert compiled.algo.optimizer.steps[0].ravel().tolist() == [16, 16]
    rerun, _ = _updates(tmp_path / "rerun", True, RUNS)
    assert all(torch.equal(param, dict(rerun.policy.named_parameters())[name]) for name, param in compiled.policy.named_parameters())


@needs_compiler
@pytest.mark.slow(reason="compiles the masked step (10-30 s)")
def test_a_compiled_run_stopped_by_target_kl_stays_put_as_in_eager(tmp_path):
    """Run 1 stops its epochs at a tiny target_kl, run 0 does not: the compiled step where not
    every run moves leaves run 1 exactly as the eager step does."""
    runs = [RUNS[0], [*RUNS[1], "algo.target_kl=1e-9"]]
    compiled, compiled_stats = _updates(tmp_path / "compiled", True, runs)
    eager, eager_stats = _updates(tmp_path / "eager", False, runs)
    _assert_same_run(compiled, eager, compiled_stats, eager_stats)
    assert compiled_stats[0]["epochs"].tolist() == [2.0, 1.0]


@needs_compiler
@pytest.mark.slow(reason="compiles PPO-KL's step (10-30 s)")
def test_a_compiled_ppo_kl_update_equals_the_eager_one(tmp_path):
    """PPO-KL's penalty (the heads' closed-form KL) compiles without a graph break, each run
    with its own beta, and agrees with eager."""
    runs = [["seed=1", "algo.beta_init=1.0"], ["seed=2", "algo.beta_init=4.0"]]
    compiled, compiled_stats = _updates(tmp_path / "compiled", True, [["algo=ppo_kl", *run] for run in runs])
    eager, eager_stats = _updates(tmp_path / "eager", False, [["algo=ppo_kl", *run] for run in runs])
    for name, param in compiled.policy.named_parameters():
        assert torch.allclose(param, dict(eager.policy.named_parameters())[name], atol=1e-5), name
    for ours, theirs in zip(compiled_stats, eager_stats):
        assert torch.allclose(ours["kl_penalty"], theirs["kl_penalty"], rtol=1e-4, atol=1e-7)


def test_auto_compiles_ppo_runs_long_enough_to_repay_the_compile_time():
    ppo = ALGORITHMS["ppo_clip"]
    hopper = to_object(compose_config("env=Hopper-v5"))  # the MuJoCo preset: 1M steps
    cartpole = to_object(compose_config())  # the CartPole preset: 50k steps
    long_run = ppo.gradient_steps(hopper.algo, hopper.env.num_envs, hopper.total_timesteps)
    short_run = ppo.gradient_steps(cartpole.algo, cartpole.env.num_envs, cartpole.total_timesteps)
    assert long_run == math.ceil(1_000_000 / 2048) * 10 * 32
    assert short_run < AUTO_MIN_GRADIENT_STEPS <= long_run
    assert should_compile(None, long_run) is has_cpp_compiler()
    assert not should_compile(None, short_run) and not should_compile(False, long_run)
    assert ALGORITHMS["pg"].gradient_steps(cartpole.algo, 8, 10**9) is None  # one step per rollout: never automatically


def test_forcing_compile_without_a_cpp_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    assert not should_compile(None, 10**9)  # auto: quietly eager
    with pytest.raises(RLRunError, match="needs a C.. compiler"):
        should_compile(True, 10)
