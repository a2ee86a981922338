"""The heads' lean log-probabilities, entropies and KLs (the losses' hot path) against
torch.distributions, which the heads' `distribution` builds for everything else."""

import gymnasium as gym
import pytest
import torch

from torch.distributions import kl_divergence

from rlrun.policies import CategoricalHead, GaussianHead


@pytest.mark.parametrize("head", [GaussianHead(gym.spaces.Box(-2, 2, (3,)), log_std_init=-0.5, num_runs=2), CategoricalHead(gym.spaces.Discrete(4))])
def test_lean_log_prob_and_entropy_equal_torch_distributions(head):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if isinstance(head, GaussianHead):
            head.log_std.copy_(torch.randn(head.log_std.shape, generator=generator))
    params = head(torch.randn(2, 5, head.num_outputs, generator=generator)).detach()
    actions = head.sample(params, [generator, generator], [0, 1])
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
