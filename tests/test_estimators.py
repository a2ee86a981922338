"""The mathematics of the ladder, checked against known answers.

A softmax policy on a 3-armed bandit (one-step episodes) has an exactly computable gradient
of the expected return, grad sum_a pi(a) r(a); the score-function estimators of eq. 12 and
eq. 13, run through the algorithms' own advantage code, must match it on average.
"""

import gymnasium as gym
import pytest
import torch

from rlrun.algos import ALGORITHMS
from rlrun.algos.base import score_function_variance
from rlrun.algos.pg import PG, PGBaseline, policy_gradient_loss
from rlrun.algos.ppo import PPOKL, adapt_kl_beta
from helpers import algo_config, policy_config
from rlrun.algos.pg import Baseline
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch, Rollout
from rlrun.trainer import policy_change

MEAN_REWARDS = torch.tensor([10.0, 11.0, 12.5])  # all positive: the tutorial's case for a baseline
EPISODES_PER_BATCH = 16
BATCHES = 1500


def _bandit_policy():
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3), policy_config("hidden_sizes=[]"))
    with torch.no_grad():
        policy.actor.body[0].bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    return policy


def _exact_gradient(policy):
    logits = policy.actor(torch.ones(1, 1))[0]
    expected_return = (torch.softmax(logits, -1) * MEAN_REWARDS).sum()
    return torch.cat([g.flatten() for g in torch.autograd.grad(expected_return, list(policy.actor.parameters()))])


def _estimates(algo):
    """BATCHES independent policy-gradient estimates, each from EPISODES_PER_BATCH episodes."""
    policy = algo.policy
    generator = torch.Generator().manual_seed(1)
    rollout = Rollout(1, EPISODES_PER_BATCH, (1,), (), torch.int64, 3)
    rollout.obs.fill_(1.0)
    rollout.dones.fill_(True)
    rollout.terminated.fill_(True)
    estimates = []
    for _ in range(BATCHES):
        with torch.no_grad():
            probs = torch.softmax(policy.actor(rollout.obs[0]), -1)
            rollout.values[0] = policy.value(rollout.obs[0])
        actions = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        rollout.actions[0] = actions
        rollout.rewards[0] = MEAN_REWARDS[actions] + torch.randn(EPISODES_PER_BATCH, generator=generator)
        advantages, returns = algo.advantages(rollout)
        batch = rollout.batch(advantages, returns)
        log_probs = policy.distribution(policy.actor(batch.obs)).log_prob(batch.actions)
        loss = policy_gradient_loss(log_probs, batch.advantages, batch.dones.sum())
        grads = torch.autograd.grad(-loss, list(policy.actor.parameters()))
        estimates.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(estimates)


def _assert_unbiased(estimates, exact):
    standard_error = estimates.std(0) / BATCHES**0.5
    assert ((estimates.mean(0) - exact).abs() <= 4 * standard_error + 1e-6).all(), (estimates.mean(0), exact)


@pytest.fixture(scope="module")
def vanilla():
    """Eq. 12's estimates (deterministic: fixed seeds), computed once for the module's tests."""
    algo = PG(algo_config("pg"), _bandit_policy())
    return _estimates(algo), _exact_gradient(algo.policy)


def test_vanilla_pg_estimator_is_unbiased(vanilla):
    _assert_unbiased(*vanilla)


@pytest.mark.parametrize("baseline", [Baseline.mean, Baseline.value])
def test_baselines_keep_the_estimator_unbiased_and_cut_its_variance(vanilla, baseline):
    vanilla, _ = vanilla
    policy = _bandit_policy()
    if baseline == Baseline.value:  # a fixed, imperfect V(s): any function of s is unbiased
        with torch.no_grad():
            policy.critic[-1].bias.fill_(10.0)
    with_baseline = _estimates(PGBaseline(algo_config("pg_baseline", f"baseline={baseline.value}"), policy))
    _assert_unbiased(with_baseline, _exact_gradient(policy))
    assert with_baseline.var(0).sum() < 0.2 * vanilla.var(0).sum()


def test_grad_var_diagnostic_sees_the_baseline():
    policy = _bandit_policy()
    actions = torch.randint(0, 3, (512,))
    obs = torch.ones(512, 1)
    returns = MEAN_REWARDS[actions] + torch.randn(512)
    batch = Batch(obs, actions, torch.zeros(512), torch.zeros(512, 3), torch.zeros(512), torch.ones(512, dtype=torch.bool), returns, returns)
    assert score_function_variance(policy, batch, returns - returns.mean()) < 0.1 * score_function_variance(policy, batch, returns)


def _cartpole_batch(policy, size=64):
    generator = torch.Generator().manual_seed(3)
    obs = torch.randn(size, 4, generator=generator)
    with torch.no_grad():
        dist_params = policy.actor(obs)
        actions = policy.distribution(dist_params).sample()
        old_log_probs = policy.distribution(dist_params).log_prob(actions)
    dones = torch.zeros(size, dtype=torch.bool)
    dones[::8] = True
    advantages = torch.randn(size, generator=generator)
    return Batch(obs, actions, old_log_probs, dist_params, torch.zeros(size), dones, advantages, advantages)


# Every algorithm with an importance-weighted surrogate (PPO's `policy_loss`), from the registry.
SURROGATES = [cls for _, cls in sorted(ALGORITHMS.items()) if hasattr(cls, "policy_loss")]


@pytest.mark.parametrize("algo_class", SURROGATES, ids=lambda cls: cls.name)
def test_importance_sampling_identity_at_theta_old(algo_class):
    """At theta = theta_old the PPO objectives' gradient is eq. 13's estimate (eq. 16-17):
    grad r_t = grad log pi at r_t = 1, the clip is inactive and the KL is at its minimum."""
    config = algo_config(algo_class.name)
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), policy_config())
    algo = algo_class(config, policy)
    batch = _cartpole_batch(policy)
    params = list(policy.actor.parameters())

    dist = policy.distribution(policy.actor(batch.obs))
    ratio = (dist.log_prob(batch.actions) - batch.old_log_probs).exp()
    ppo_loss, _ = algo.policy_loss(ratio, batch.advantages, dist, batch)
    ppo_grads = torch.autograd.grad(ppo_loss, params)

    dist = policy.distribution(policy.actor(batch.obs))
    pg_loss = policy_gradient_loss(dist.log_prob(batch.actions), batch.advantages, batch.dones.sum())
    pg_grads = torch.autograd.grad(pg_loss, params)
    # eq. 17 averages over samples, eq. 13 sums over steps and averages over episodes
    scale = len(batch) / batch.dones.sum()
    for ppo_grad, pg_grad in zip(ppo_grads, pg_grads):
        assert torch.allclose(ppo_grad * scale, pg_grad, atol=1e-6)


@pytest.mark.parametrize(
    "kl, expected",
    [(0.001, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0), (0.015, 1.0), (0.0151, 2.0), (0.5, 2.0)],
)
def test_adaptive_beta_rule(kl, expected):
    """Schulman et al. 2017: beta /= 2 below d_targ / 1.5, beta *= 2 above 1.5 d_targ, else kept."""
    assert adapt_kl_beta(1.0, kl, kl_target=0.01, beta_min=1e-3, beta_max=1e3) == expected


def test_ppo_kl_update_adapts_beta_only_when_adaptive():
    for adaptive in (True, False):
        torch.manual_seed(0)
        policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), policy_config())
        algo = PPOKL(algo_config("ppo_kl", f"adaptive={adaptive}", "beta_init=1.0", "kl_target=1e-6", "lr=1e-2"), policy)
        batch = _cartpole_batch(policy)
        stats = algo.update(batch)
        assert stats["kl_beta"] == 1.0 and "kl_penalty" in stats
        algo.after_update({**stats, **policy_change(policy, batch)})
        assert algo.kl_beta == (2.0 if adaptive else 1.0)  # the update moved KL far past 1.5e-6
