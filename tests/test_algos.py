"""Properties of the algorithms' losses that the tutorial's equations imply."""

import gymnasium as gym
import torch

from rlrun.algos.ppo import PPOClip
from helpers import algo_config, policy_config
from rlrun.policies import ActorCritic


def _policy():
    torch.manual_seed(0)
    return ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), policy_config())


def test_ppo_clip_zero_gradient_outside_the_clip_range_on_the_favoured_side():
    """Eq. 19: once r_t has left [1-eps, 1+eps] in the direction A_t rewards, the min picks
    the clipped constant and the sample stops pushing; on the other side it still does."""
    algo = PPOClip(algo_config("ppo_clip", "clip_eps=0.2"), _policy())
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1, 0.9], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    loss, diagnostics = algo.policy_loss(ratio, advantages, None, None)
    loss.backward()
    # clipped: r > 1+eps with A > 0, r < 1-eps with A < 0
    assert ratio.grad[:2].tolist() == [0.0, 0.0]
    # pessimistic side and inside the range: gradient -A/n flows
    assert torch.allclose(ratio.grad[2:], -advantages[2:] / 6)
    assert abs(diagnostics["clipfrac"].item() - 4 / 6) < 1e-6


def test_ppo_clip_equals_the_surrogate_inside_the_range():
    algo = PPOClip(algo_config("ppo_clip", "clip_eps=0.2"), _policy())
    ratio = torch.tensor([1.05, 0.95, 1.0])
    advantages = torch.tensor([2.0, -1.0, 0.5])
    loss, _ = algo.policy_loss(ratio, advantages, None, None)
    assert torch.isclose(loss, -(ratio * advantages).mean())


def test_target_kl_stops_the_epochs_early():
    from rlrun.rollout import Batch

    def update(target_kl):
        policy = _policy()
        torch.manual_seed(1)
        obs = torch.randn(64, 3)
        with torch.no_grad():
            dist_params = policy.actor(obs)
            actions = policy.distribution(dist_params).sample()
            log_probs = policy.distribution(dist_params).log_prob(actions)
        advantages = torch.randn(64)
        batch = Batch(obs, actions, log_probs, dist_params, torch.zeros(64), torch.zeros(64, dtype=torch.bool), advantages, advantages)
        return PPOClip(algo_config("ppo_clip", "epochs=8", "lr=1e-2", f"target_kl={target_kl}", "anneal_lr=false"), policy).update(batch)

    assert update("null")["epochs"] == 8
    assert update(1e-9)["epochs"] == 1  # the first epoch already moved the policy past it
