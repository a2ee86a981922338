"""Properties of the algorithms' losses that the tutorial's equations imply, for each run of
a group (each with its own hyperparameters)."""

import gymnasium as gym
import torch

from helpers import algo_config, generators, policy_config, sample
from rlrun.algos.ppo import PPOClip
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch


def _policy(*seeds):
    return ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), policy_config(), True, generators(*seeds))


def _ppo_clip(*per_run: list[str], seeds=None):
    """PPO-clip for a group of len(per_run) runs, run r's config with `per_run[r]`'s overrides
    and its initial weights and minibatches from seed `seeds[r]` (default r)."""
    seeds = range(len(per_run)) if seeds is None else seeds
    return PPOClip([algo_config("ppo_clip", *overrides) for overrides in per_run], _policy(*seeds), generators(*seeds))


def _minibatch(mask):
    """A Batch whose only part the losses read is its `mask` (R, B)."""
    size = mask.shape
    zeros = torch.zeros(size)
    return Batch(torch.zeros(*size, 3), zeros.long(), zeros, torch.zeros(*size, 2), zeros, zeros.bool(), zeros, zeros, mask)


def test_ppo_clip_zero_gradient_outside_the_clip_range_on_the_favoured_side():
    """Eq. 19: once r_t has left [1-eps, 1+eps] in the direction A_t rewards, the min picks
    the clipped constant and the sample stops pushing; on the other side it still does. Two
    runs with their own eps (0.2, 0.3), and a padding slot (mask 0) that must not count."""
    algo = _ppo_clip(["clip_eps=0.2"], ["clip_eps=0.3"])
    ratio = torch.tensor([
        [1.5, 0.5, 1.5, 0.5, 1.1, 0.9, 3.0],
        [1.25, 0.75, 1.5, 0.5, 1.1, 1.35, 3.0],
    ], requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0], [1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0] * 6 + [0.0]] * 2)
    loss, diagnostics = algo.policy_loss(ratio, advantages, None, _minibatch(mask))
    assert loss.shape == (2,)
    loss.sum().backward()
    # run 0, clipped: r > 1+eps with A > 0, r < 1-eps with A < 0
    assert ratio.grad[0, :2].tolist() == [0.0, 0.0]
    # pessimistic side and inside the range: gradient -A/n flows (n = 6 real samples)
    assert torch.allclose(ratio.grad[0, 2:6], -advantages[0, 2:6] / 6)
    # run 1: 1.25 and 0.75 are inside its wider range, 1.35 with A > 0 is clipped
    assert torch.allclose(ratio.grad[1, :5], -advantages[1, :5] / 6) and ratio.grad[1, 5] == 0
    assert ratio.grad[:, 6].tolist() == [0.0, 0.0]  # padding
    assert torch.allclose(diagnostics["clipfrac"], torch.tensor([4 / 6, 3 / 6]))
    # run 0 alone, a group of one: the same loss, gradient and clip fraction
    alone = ratio[:1].detach().requires_grad_()
    alone_loss, alone_diagnostics = _ppo_clip(["clip_eps=0.2"]).policy_loss(alone, advantages[:1], None, _minibatch(mask[:1]))
    alone_loss.sum().backward()
    assert torch.allclose(alone_loss, loss[:1]) and torch.equal(alone.grad, ratio.grad[:1])
    assert torch.equal(alone_diagnostics["clipfrac"], diagnostics["clipfrac"][:1])


def test_ppo_clip_equals_the_surrogate_inside_the_range():
    algo = _ppo_clip(["clip_eps=0.2"], ["clip_eps=0.1"])
    ratio = torch.tensor([[1.05, 0.95, 1.0], [1.08, 0.93, 1.0]])
    advantages = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 3.0, 0.5]])
    loss, diagnostics = algo.policy_loss(ratio, advantages, None, _minibatch(torch.ones(2, 3)))
    assert torch.allclose(loss, -(ratio * advantages).mean(1))
    assert diagnostics["clipfrac"].tolist() == [0.0, 0.0]
    alone, _ = _ppo_clip(["clip_eps=0.2"]).policy_loss(ratio[:1], advantages[:1], None, _minibatch(torch.ones(1, 3)))
    assert torch.allclose(alone, -(ratio[0] * advantages[0]).mean())


def _update(*runs):
    """One PPO-clip update of a group of `runs`, (seed, target_kl) each: the seed picks the
    run's initial weights, minibatches and batch."""
    seeds = [seed for seed, _ in runs]
    algo = _ppo_clip(*[["epochs=8", "lr=1e-2", f"target_kl={kl}", "anneal_lr=false"] for _, kl in runs], seeds=seeds)
    policy = algo.policy
    obs = torch.stack([torch.randn(64, 3, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    with torch.no_grad():
        dist_params = policy.actor(obs)
        actions = sample(policy.head, dist_params, [1000 + seed for seed in seeds])
        log_probs = policy.distribution(dist_params).log_prob(actions)
    advantages = torch.stack([torch.randn(64, generator=torch.Generator().manual_seed(100 + seed)) for seed in seeds])
    zeros = torch.zeros(len(runs), 64)
    batch = Batch(obs, actions, log_probs, dist_params, zeros, zeros.bool(), advantages, advantages, torch.ones(len(runs), 64))
    return algo.update(batch), policy


def test_target_kl_stops_the_epochs_early():
    assert _update((0, "null"))[0]["epochs"].tolist() == [8]
    assert _update((0, 1e-9))[0]["epochs"].tolist() == [1]  # the first epoch already moved the policy past it
    # In one group each run stops at its own target, and ends where it would have alone.
    stats, group = _update((0, "null"), (1, 1e-9))
    assert stats["epochs"].tolist() == [8, 1]
    for run, alone in enumerate([_update((0, "null"))[1], _update((1, 1e-9))[1]]):
        ours, theirs = group.run_state_dict(run), alone.run_state_dict(0)
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=f"run {run}: {name}")
