"""The heads' lean log-probabilities, entropies and KLs (the losses' hot path) against
torch.distributions, which the heads' `distribution` builds for everything else; acting's
numpy forward pass and sampling against the actor's."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from torch.distributions import kl_divergence

from helpers import generators, policy_config, sample
from rlrun.optim import Adam
from rlrun.policies import Acting, ActorCritic, CategoricalHead, GaussianHead


@pytest.mark.parametrize("head", [GaussianHead(gym.spaces.Box(-2, 2, (3,)), log_std_init=-0.5, num_runs=2), CategoricalHead(gym.spaces.Discrete(4))])
def test_lean_log_prob_and_entropy_equal_torch_distributions(head):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if isinstance(head, GaussianHead):
            head.log_std.copy_(torch.randn(head.log_std.shape, generator=generator))
    params = head(torch.randn(2, 5, head.num_outputs, generator=generator)).detach()
    actions = sample(head, params, [1, 1])
    reference = head.distribution(params)
    assert torch.allclose(head.log_prob(params, actions), reference.log_prob(actions), atol=1e-5)
    assert torch.allclose(head.entropy(params), reference.entropy(), atol=1e-5)
    other = head(torch.randn(2, 5, head.num_outputs, generator=generator)).detach()
    other[..., -1] += 0.3  # the Gaussian's last log sigma differs too
    assert torch.allclose(head.kl(params, other), kl_divergence(reference, head.distribution(other)), atol=1e-5)
    assert torch.allclose(head.kl(params, params), torch.zeros(2, 5), atol=1e-6)
    # and their gradients, which the loss follows
    params.requires_grad_()
    lean = torch.autograd.grad((head.log_prob(params, actions) + head.entropy(params)).sum(), params)[0]
    full = torch.autograd.grad((head.distribution(params).log_prob(actions) + head.distribution(params).entropy()).sum(), params)[0]
    assert torch.allclose(lean, full, atol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("action_space", [gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(3)], ids=["gaussian", "categorical"])
def test_acting_is_the_actors_forward_pass_and_follows_every_update(activation, action_space):
    policy = ActorCritic(gym.spaces.Box(-1, 1, (5,)), action_space, policy_config(f"activation={activation}"), True, generators(1, 2, 3))
    optimizer = Adam([policy.actor], lr=torch.full((3,), 0.1))  # puts the parameters in its banks first, as training does
    act = Acting(policy.actor)
    obs = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # before and after a step: the views see the parameters move in place
        with torch.no_grad():
            expected = policy.actor(obs)
        assert np.allclose(act(obs.numpy()), expected.numpy(), rtol=1e-5, atol=1e-6)
        optimizer.zero_grad()
        policy.actor(obs).pow(2).sum().backward()
        optimizer.step(torch.full((3,), np.inf), torch.ones(3, dtype=torch.bool))
    assert not np.allclose(act(obs.numpy()), expected.numpy(), atol=1e-3)  # the step moved it


def test_gaussian_acting_samples_its_own_distribution_and_only_acting_runs_draw():
    head = GaussianHead(gym.spaces.Box(-1, 1, (2,)), log_std_init=0.0, num_runs=3)
    with torch.no_grad():
        head.log_std.copy_(torch.tensor([[-1.0, 0.5], [0.0, 0.0], [0.3, -0.2]]))
    mean = torch.tensor([[1.0, -2.0], [0.0, 0.0], [0.5, 0.5]]).view(3, 1, 2).expand(3, 200_000, 2)
    params = head.numpy_params(mean.numpy())
    noise_generators = generators(1, 2, 3)
    untouched = noise_generators[1].get_state()
    actions = head.sample(params, head.noise(noise_generators, [0, 2], (200_000,)))
    assert torch.equal(noise_generators[1].get_state(), untouched)  # run 1 does not act, and does not draw
    assert np.array_equal(actions[1], mean[1].numpy())  # ... and its actions are the mean
    for run in (0, 2):
        assert np.allclose(actions[run].mean(0), mean[run, 0].numpy(), atol=0.02)
        assert np.allclose(actions[run].std(0), head.log_std[run].exp().detach().numpy(), rtol=0.01)
    assert np.array_equal(head.sample(params, None), mean.numpy())  # no noise: the most likely action
