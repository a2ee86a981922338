"""The per-run Adam of rlrun/optim.py against torch's own, run by run.

A group of R runs is R independent optimisation problems: run r's parameters must move as
`torch.optim.Adam(eps=1e-5, foreach=False)` after `torch.nn.utils.clip_grad_norm_` moves
that run trained alone (here: a group of one, whose parameters are ordinary tensors for
torch's optimizer, fed the same data). The group's arithmetic is batched over runs and rounds
differently in the last bits, so those comparisons use tolerances; what must not happen at
all (an inactive run or an unused module moving) is checked bit for bit.
"""

import json
import math
import subprocess
import sys

import gymnasium as gym
import pytest
import torch
from torch import nn

from helpers import generators, policy_config
from rlrun.optim import Adam
from rlrun.policies import ActorCritic

EPS = 1e-5  # as rlrun's algorithms build it (the PPO reference implementations' eps)
# What rounding alone leaves after the 21 steps of the test below: the runs end within about
# 2e-7 of torch's (bias corrections in float64, as torch computes them); a wrong step count,
# bias correction, eps, clipping or learning rate moves a run by far more within a few steps.
TIGHT = {"rtol": 1e-5, "atol": 1e-6}
OBS, ACTIONS = gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (2,))


def _policy(*seeds: int) -> ActorCritic:
    """Actor (an MLP and a Gaussian head's log sigma) and critic, one run per seed."""
    return ActorCritic(OBS, ACTIONS, policy_config("hidden_sizes=[16]"), True, generators(*seeds))


def _single(policy: ActorCritic, run: int) -> ActorCritic:
    """Run `run` of `policy` alone: a group of one with its weights."""
    alone = _policy(0)
    alone.load_run_state_dict(0, policy.run_state_dict(run))
    return alone


def _losses(policy: ActorCritic, step: int, runs: range, with_critic: bool = True) -> torch.Tensor:
    """Each run's loss on data of its own, (R,): the same data for run r whatever the group
    (run r's data depends on `runs[r]`, the run's index in the full group)."""
    data = [torch.Generator().manual_seed(1000 * step + run) for run in runs]
    obs = torch.stack([torch.randn(8, 4, generator=g) for g in data])
    targets = torch.stack([torch.randn(8, 2, generator=g) for g in data])
    values = torch.stack([torch.randn(8, generator=g) for g in data])
    dist = policy.distribution(policy.actor(obs))
    loss = -dist.log_prob(targets).mean(1)
    if with_critic:
        loss = loss + (policy.value(obs) - values).pow(2).mean(1)
    return loss


def _modules(policy: ActorCritic) -> list[nn.Module]:
    return [policy.actor, policy.critic]


def _step(policy, optimizer, step, max_norm, active=None, runs=None, with_critic=True) -> torch.Tensor:
    runs = range(policy.num_runs) if runs is None else runs
    optimizer.zero_grad()
    _losses(policy, step, runs, with_critic).sum().backward()
    active = torch.ones(policy.num_runs, dtype=torch.bool) if active is None else active
    return optimizer.step(max_norm, active)


def test_adam_with_clipping_matches_torch_run_by_run():
    """R = 3 runs with their own learning rates and gradient-norm limits (one clips hard, one
    never, one sometimes), a learning-rate change midway, and every third step a policy-only
    step: the critic gets no gradient and keeps its moments and step count, as torch.optim
    leaves a parameter without a gradient."""
    lrs, max_norms = [1e-3, 3e-2, 1e-2], [0.05, math.inf, 1.0]
    policy = _policy(0, 1, 2)
    references = [_single(policy, run) for run in range(3)]
    optimizer = Adam(_modules(policy), lr=torch.tensor(lrs), eps=EPS)
    torch_optimizers = [
        torch.optim.Adam([*ref.actor.parameters(), *ref.critic.parameters()], lr=lr, eps=EPS, foreach=False)
        for ref, lr in zip(references, lrs)
    ]
    norms_seen = []
    for step in range(21):
        with_critic = step % 3 != 2
        norms = _step(policy, optimizer, step, torch.tensor(max_norms), with_critic=with_critic)
        for run, (ref, ref_optimizer) in enumerate(zip(references, torch_optimizers)):
            ref_optimizer.zero_grad()
            _losses(ref, step, range(run, run + 1), with_critic).sum().backward()
            norm = nn.utils.clip_grad_norm_(list(ref.parameters()), max_norms[run], foreach=False)
            ref_optimizer.step()
            torch.testing.assert_close(norms[run], norm, **TIGHT)
        norms_seen.append(norms)
        if step == 10:  # a changed learning rate is used from the next step on
            lrs = [lr / 3 for lr in lrs]
            optimizer.lr = torch.tensor(lrs)
            for ref_optimizer, lr in zip(torch_optimizers, lrs):
                ref_optimizer.param_groups[0]["lr"] = lr
    norms_seen = torch.stack(norms_seen)
    assert (norms_seen[:, 0] > 10 * max_norms[0]).all()  # run 0 was clipped at every step
    assert (norms_seen[:, 2] > max_norms[2]).any() and (norms_seen[:, 2] < max_norms[2]).any()

    for run, (ref, ref_optimizer) in enumerate(zip(references, torch_optimizers)):
        ours, theirs = policy.run_state_dict(run), ref.run_state_dict(0)
        assert ours.keys() == theirs.keys()
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], **TIGHT, msg=f"run {run}: {name}")
        state = optimizer.run_state_dict(run)
        ref_params = [*ref.actor.parameters(), *ref.critic.parameters()]
        assert state["steps"] == [int(ref_optimizer.state[p]["step"]) for p in ref_params]
        for i, param in enumerate(ref_params):
            ref_state = ref_optimizer.state[param]
            torch.testing.assert_close(state["exp_avgs"][i], ref_state["exp_avg"].squeeze(0), **TIGHT)
            torch.testing.assert_close(state["exp_avg_sqs"][i], ref_state["exp_avg_sq"].squeeze(0), **TIGHT)
    # 21 steps, 7 of them policy-only: the critic's moments saw 14
    actor_params, critic_params = len(list(policy.actor.parameters())), len(list(policy.critic.parameters()))
    assert optimizer.run_state_dict(0)["steps"] == [21] * actor_params + [14] * critic_params
    # every run moved well beyond the tolerance
    for run, seed in enumerate((0, 1, 2)):
        assert (policy.actor.body[0].weight[run] - _policy(seed).actor.body[0].weight[0]).abs().max() > 1e-3


def test_an_inactive_run_does_not_move_at_all():
    """A run that is not active in a step (stopped early by target_kl, finished, failed) keeps
    its parameters, moments and step count bit for bit, though it had a gradient; the others
    step as usual."""
    policy = _policy(0, 1, 2)
    optimizer = Adam(_modules(policy), lr=torch.tensor([1e-2, 2e-2, 3e-2]), eps=EPS)
    max_norm = torch.tensor([0.5, math.inf, 0.5])
    for step in range(3):
        _step(policy, optimizer, step, max_norm)
    before = [(policy.run_state_dict(run), optimizer.run_state_dict(run)) for run in range(3)]
    norms = _step(policy, optimizer, 3, max_norm, active=torch.tensor([True, False, True]))
    assert (norms > 0).all()  # run 1 had a gradient too
    assert all(param.grad[1].abs().sum() > 0 for param in optimizer.params)
    names = [name for name, _ in policy.named_parameters()]
    params, state = policy.run_state_dict(1), optimizer.run_state_dict(1)
    assert all(torch.equal(params[name], before[1][0][name]) for name in names)
    assert state["steps"] == before[1][1]["steps"] == [3] * len(optimizer.params)
    for key in ("exp_avgs", "exp_avg_sqs"):
        assert all(torch.equal(a, b) for a, b in zip(state[key], before[1][1][key]))
    for run in (0, 2):
        params, state = policy.run_state_dict(run), optimizer.run_state_dict(run)
        assert all(not torch.equal(params[name], before[run][0][name]) for name in names)
        assert state["steps"] == [4] * len(optimizer.params)


def test_a_module_without_gradients_is_left_alone():
    """The critic during a policy-only step (pg_baseline's policy step, say): its parameters,
    moments and step count stay as they are, bit for bit, in every run."""
    policy = _policy(0, 1)
    optimizer = Adam(_modules(policy), lr=torch.tensor([1e-2, 3e-2]), eps=EPS)
    max_norm = torch.tensor([0.5, math.inf])
    _step(policy, optimizer, 0, max_norm)
    critic_bank = optimizer.banks[1]
    critic, moments = critic_bank.data.clone(), (optimizer.exp_avgs[1].clone(), optimizer.exp_avg_sqs[1].clone())
    actor = optimizer.banks[0].data.clone()
    _step(policy, optimizer, 1, max_norm, with_critic=False)
    assert all(param.grad is None for param in policy.critic.parameters())
    assert torch.equal(critic_bank.data, critic)
    assert torch.equal(optimizer.exp_avgs[1], moments[0]) and torch.equal(optimizer.exp_avg_sqs[1], moments[1])
    assert optimizer.steps[1].flatten().tolist() == [1, 1] and optimizer.steps[0].flatten().tolist() == [2, 2]
    assert (optimizer.banks[0].data != actor).any(1).all()  # the actor of every run moved

    # no gradient anywhere: a no-op, and a zero norm for every run
    optimizer.zero_grad()
    everything = [bank.data.clone() for bank in optimizer.banks]
    assert torch.equal(optimizer.step(max_norm, torch.ones(2, dtype=torch.bool)), torch.zeros(2))
    assert all(torch.equal(bank.data, data) for bank, data in zip(optimizer.banks, everything))
    assert optimizer.steps[0].flatten().tolist() == [2, 2]


def test_a_restored_adam_steps_exactly_like_the_original():
    """run_state_dict / load_run_state_dict: a fresh group (other initial weights) loaded with
    the original's runs, each into the other's slot, continues exactly as the original does."""
    lrs, max_norms = [1e-2, 3e-2], [0.5, math.inf]
    original = _policy(0, 1)
    optimizer = Adam(_modules(original), lr=torch.tensor(lrs), eps=EPS)
    for step in range(3):
        _step(original, optimizer, step, torch.tensor(max_norms))

    swapped = _policy(5, 6)
    restored = Adam(_modules(swapped), lr=torch.tensor(lrs[::-1]), eps=EPS)
    for run in range(2):
        swapped.load_run_state_dict(1 - run, original.run_state_dict(run))
        restored.load_run_state_dict(1 - run, optimizer.run_state_dict(run))
    for step in range(3, 6):
        _step(original, optimizer, step, torch.tensor(max_norms))
        _step(swapped, restored, step, torch.tensor(max_norms[::-1]), runs=range(1, -1, -1))
    for run in range(2):
        ours, theirs = original.run_state_dict(run), swapped.run_state_dict(1 - run)
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
        state, restored_state = optimizer.run_state_dict(run), restored.run_state_dict(1 - run)
        assert state["steps"] == restored_state["steps"] == [6] * len(optimizer.params)
        for key in ("exp_avgs", "exp_avg_sqs"):
            assert all(torch.equal(a, b) for a, b in zip(state[key], restored_state[key]))

    no_critic = ActorCritic(OBS, ACTIONS, policy_config("hidden_sizes=[16]"), False, generators(0))
    actor_only = len(list(no_critic.parameters()))
    with pytest.raises(ValueError, match=f"state for {len(optimizer.params)} parameters, this optimizer has {actor_only}"):
        Adam([no_critic.actor], lr=torch.tensor([1e-2]), eps=EPS).load_run_state_dict(0, optimizer.run_state_dict(0))


def test_parameters_are_views_of_one_run_by_parameter_tensor_per_module():
    """Each module's parameters live in one (R, P) tensor, `bank.data`, row r holding run r's
    parameters: the module's own parameters are views of it, so a step on `data` is a step of
    the network."""
    policy = _policy(0, 1, 2)
    before = {name: param.detach().clone() for name, param in policy.named_parameters()}
    optimizer = Adam(_modules(policy), lr=torch.full((3,), 1e-2), eps=EPS)
    for bank, module in zip(optimizer.banks, _modules(policy)):
        params = list(module.parameters())
        assert [id(p) for p in params] == [id(p) for p in bank.params]  # the module's own parameters
        assert bank.data.shape == (3, sum(p[0].numel() for p in params))
        for param in params:
            assert isinstance(param, nn.Parameter) and param.requires_grad
            assert param.untyped_storage().data_ptr() == bank.data.untyped_storage().data_ptr()
    assert [bank.data.shape[1] for bank in optimizer.banks] == [2 + 4 * 16 + 16 + 16 * 2 + 2, 4 * 16 + 16 + 16 + 1]
    # moving the bank moved the module, with the values they had before (row r: run r's)
    for name, param in policy.named_parameters():
        assert torch.equal(param, before[name]), name
    obs = torch.randn(3, 5, 4)
    values = policy.value(obs)
    optimizer.banks[1].data[1] += 1.0
    after = policy.value(obs)
    assert torch.equal(after[[0, 2]], values[[0, 2]]) and not torch.equal(after[1], values[1])
    # and a step writes through the views: the gradient reaches the bank, the step the module
    _step(policy, optimizer, 0, torch.full((3,), math.inf))
    assert all(not torch.equal(param, before[f"actor.{name}"]) for name, param in policy.actor.named_parameters())


def test_training_does_not_import_torch_dynamo(tmp_path):
    """torch.optim imports torch._dynamo on first use (about a second); a PPO run must not."""
    code = (
        "import sys\n"
        "from rlrun.cli import main\n"
        f"sys.argv = ['rlrun', 'train', 'total_timesteps=256', 'env.num_envs=8', 'algo.rollout_steps=16', "
        f"'eval_episodes=1', 'hydra.run.dir={tmp_path}']\n"
        "try:\n    main()\nexcept SystemExit as exit_:\n    assert not exit_.code, exit_.code\n"
        "assert 'torch' in sys.modules and 'torch._dynamo' not in sys.modules, 'dynamo imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_adam_and_clipping_do_not_import_torch_dynamo():
    """The optimizer alone, in a fresh interpreter: nothing may pull in torch._dynamo."""
    code = (
        "import sys\n"
        "import torch\n"
        "from rlrun.optim import Adam\n"
        "from rlrun.policies import mlp\n"
        "net = mlp(4, [64], 2, 'tanh', 1.0, [torch.Generator() for _ in range(2)])\n"
        "optimizer = Adam([net], lr=torch.tensor([1e-3, 1e-2]), eps=1e-5)\n"
        "for _ in range(2):\n"
        "    optimizer.zero_grad()\n"
        "    net(torch.randn(2, 8, 4)).pow(2).mean((1, 2)).sum().backward()\n"
        "    optimizer.step(torch.tensor([0.5, float('inf')]), torch.tensor([True, True]))\n"
        "assert 'torch._dynamo' not in sys.modules, 'dynamo imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
