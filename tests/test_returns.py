import torch
from pytest import approx

from rlrun.returns import gae

GAMMA, LAMBDA = 0.9, 0.8


def _batch():
    """Two envs, four steps, hand-built under NEXT_STEP autoreset.

    env 0: terminates at t=1; t=2 is the reset step (reward 0, not a real transition).
    env 1: truncated by a time limit at t=2; values[3] is V(final observation) and must be
    bootstrapped from; t=3 is the reset step.
    """
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    values = torch.tensor([[0.5, 1.0], [0.4, 2.0], [0.3, 3.0], [0.2, 4.0]])
    next_value = torch.tensor([0.1, 5.0])
    terminated = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    dones = torch.tensor([[False, False], [True, False], [False, True], [False, False]])
    return rewards, values, next_value, terminated, dones


def test_gae_by_hand_with_termination_and_truncation():
    advantages, returns = gae(*_batch(), GAMMA, LAMBDA)
    decay = GAMMA * LAMBDA
    # env 0: terminal at t=1 -> no bootstrap, and t=0 sees only its own episode.
    a3 = 1 + GAMMA * 0.1 - 0.2
    a1 = 1 - 0.4
    a0 = (1 + GAMMA * 0.4 - 0.5) + decay * a1
    assert advantages[:, 0][[0, 1, 3]].tolist() == approx([a0, a1, a3])
    # env 1: truncated at t=2 -> bootstrap from V(final obs) = 4.0, then cut.
    b2 = 1 + GAMMA * 4.0 - 3.0
    b1 = (1 + GAMMA * 3.0 - 2.0) + decay * b2
    b0 = (1 + GAMMA * 2.0 - 1.0) + decay * b1
    assert advantages[:3, 1].tolist() == approx([b0, b1, b2])
    assert torch.allclose(returns, advantages + _batch()[1])


def _reference_gae(rewards, values, next_value, terminated, dones, gamma, lam):
    """Per-env, per-step loops: the definition written out with no vectorisation."""
    T, N = rewards.shape
    out = torch.zeros(T, N)
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                next_v = values[k + 1, n] if k + 1 < T else next_value[n]
                delta = rewards[k, n] + gamma * next_v * (not terminated[k, n]) - values[k, n]
                total += weight * delta
                if dones[k, n]:
                    break
                weight *= gamma * lam
            out[t, n] = total
    return out


def test_gae_matches_reference_on_random_batches():
    generator = torch.Generator().manual_seed(0)
    for lam in (0.0, 0.5, 0.95, 1.0):
        rewards = torch.randn(20, 3, generator=generator)
        values = torch.randn(20, 3, generator=generator)
        next_value = torch.randn(3, generator=generator)
        dones = torch.rand(20, 3, generator=generator) < 0.2
        terminated = dones & (torch.rand(20, 3, generator=generator) < 0.5)
        advantages, _ = gae(rewards, values, next_value, terminated, dones, 0.97, lam)
        expected = _reference_gae(rewards, values, next_value, terminated, dones, 0.97, lam)
        assert torch.allclose(advantages, expected, atol=1e-5)


def test_gae_lambda_one_is_discounted_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.25], [0.125]])
    no_end = torch.zeros(3, 1, dtype=torch.bool)
    advantages, returns = gae(rewards, values, torch.tensor([10.0]), no_end, no_end, 0.5, 1.0)
    # G_0 = 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * V(s_3) with V(s_3) = 10 bootstrapping the cut rollout
    assert returns[:, 0].tolist() == approx([1 + 1 + 0.75 + 1.25, 2 + 1.5 + 2.5, 3 + 5])
    assert advantages[:, 0].tolist() == approx((returns - values)[:, 0].tolist())


def _episodes():
    """One env, six steps: an episode of 3 ending at t=2, the reset step t=3 (reward 0),
    then an episode of 2 ending at t=5."""
    rewards = torch.tensor([[1.0], [2.0], [3.0], [0.0], [4.0], [5.0]])
    dones = torch.tensor([[False], [False], [True], [False], [False], [True]])
    return rewards, dones


def test_reward_to_go_by_hand():
    from rlrun.returns import reward_to_go

    rewards, dones = _episodes()
    assert reward_to_go(rewards, dones, 1.0)[:, 0].tolist() == approx([6, 5, 3, 9, 9, 5])
    g = 0.5
    assert reward_to_go(rewards, dones, g)[:, 0].tolist() == approx(
        [1 + g * 2 + g * g * 3, 2 + g * 3, 3, g * 4 + g * g * 5, 4 + g * 5, 5]
    )


def test_episode_returns_by_hand():
    from rlrun.returns import episode_returns

    rewards, dones = _episodes()
    # every step carries R(tau) of its own episode; the reset step's value is never used
    totals = episode_returns(rewards, dones)[:, 0].tolist()
    assert totals[:3] == approx([6, 6, 6]) and totals[4:] == approx([9, 9])
    assert episode_returns(rewards, dones, 0.5)[:3, 0].tolist() == approx([2.75] * 3)


def test_returns_are_independent_per_env():
    from rlrun.returns import episode_returns, reward_to_go

    rewards, dones = _episodes()
    both = (torch.cat([rewards, rewards.flip(0)], 1), torch.cat([dones, dones.roll(1, 0)], 1))
    for fn in (reward_to_go, episode_returns):
        assert torch.equal(fn(*both, 0.9)[:, 0], fn(rewards, dones, 0.9)[:, 0])
        assert torch.equal(fn(*both, 0.9)[:, 1:], fn(rewards.flip(0), dones.roll(1, 0), 0.9))


def test_leave_one_out_baseline_counts_each_episode_once():
    from rlrun.algos.pg import leave_one_out_mean

    # three whole episodes (one per column) of lengths 1, 2, 4 and returns R = 1, 2, 4
    valid = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=torch.bool)
    returns = torch.tensor([1.0, 2.0, 4.0]).expand(4, 3) * valid
    assert leave_one_out_mean(returns, valid).tolist() == [approx([3.0, 2.5, 1.5])]  # (1, N): one per episode
    # a group of two runs, (R, T, N): each run's baseline from its own episodes only
    other = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    both = leave_one_out_mean(torch.stack([returns, torch.tensor([8.0, 2.0, 6.0]).expand(4, 3) * other]), torch.stack([valid, other]))
    assert both.shape == (2, 1, 3)
    assert both[0, 0].tolist() == approx([3.0, 2.5, 1.5]) and both[1, 0].tolist() == approx([4.0, 7.0, 5.0])


def test_estimators_take_a_leading_run_dimension_with_a_gamma_and_lambda_per_run():
    """(R, T, N) rollouts with (R, 1, 1) gammas and lambdas: run r's result is what its own
    (T, N) rollout gives with its own floats."""
    from rlrun.returns import episode_returns, reward_to_go

    generator = torch.Generator().manual_seed(1)
    runs = [(0.97, 0.95), (0.5, 0.0), (1.0, 1.0)]
    rewards = torch.randn(3, 20, 4, generator=generator)
    values = torch.randn(3, 20, 4, generator=generator)
    next_value = torch.randn(3, 4, generator=generator)
    dones = torch.rand(3, 20, 4, generator=generator) < 0.2
    terminated = dones & (torch.rand(3, 20, 4, generator=generator) < 0.5)
    gammas = torch.tensor([gamma for gamma, _ in runs]).view(-1, 1, 1)
    lambdas = torch.tensor([lam for _, lam in runs]).view(-1, 1, 1)
    advantages, returns = gae(rewards, values, next_value, terminated, dones, gammas, lambdas)
    to_go, totals = reward_to_go(rewards, dones, gammas), episode_returns(rewards, dones, gammas)
    for run, (gamma, lam) in enumerate(runs):
        alone = gae(rewards[run], values[run], next_value[run], terminated[run], dones[run], gamma, lam)
        assert torch.allclose(advantages[run], alone[0], atol=1e-6) and torch.allclose(returns[run], alone[1], atol=1e-6)
        reference = _reference_gae(rewards[run], values[run], next_value[run], terminated[run], dones[run], gamma, lam)
        assert torch.allclose(advantages[run], reference, atol=1e-5)
        assert torch.allclose(to_go[run], reward_to_go(rewards[run], dones[run], gamma), atol=1e-6)
        assert torch.allclose(totals[run], episode_returns(rewards[run], dones[run], gamma), atol=1e-6)
