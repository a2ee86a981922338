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
from helpers import algo_config, generators, policy_config, sample
from rlrun.algos.pg import Baseline
from rlrun.policies import ActorCritic
from rlrun.rollout import Batch, Rollout
from rlrun.trainer import policy_change

MEAN_REWARDS = torch.tensor([10.0, 11.0, 12.5])  # all positive: the tutorial's case for a baseline
EPISODES_PER_BATCH = 16
BATCHES = 1500


def _bandit_policy(runs=1):
    """A softmax policy on the bandit (logits W * 1 + b), in a group of `runs` identical runs."""
    policy = ActorCritic(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3), policy_config("hidden_sizes=[]"), True, generators(*[0] * runs))
    with torch.no_grad():
        policy.actor.body[0].bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    return policy


def _exact_gradient(policy):
    logits = policy.actor(torch.ones(1, 1, 1))[0, 0]
    expected_return = (torch.softmax(logits, -1) * MEAN_REWARDS).sum()
    return torch.cat([g.flatten() for g in torch.autograd.grad(expected_return, list(policy.actor.parameters()))])


def _estimates(algo):
    """BATCHES independent policy-gradient estimates, each from EPISODES_PER_BATCH episodes."""
    policy = algo.policy
    generator = torch.Generator().manual_seed(1)
    rollout = Rollout(1, 1, EPISODES_PER_BATCH, (1,), (), torch.int64, 3)  # one run, one step of each env
    rollout.obs.fill_(1.0)
    rollout.dones.fill_(True)
    rollout.terminated.fill_(True)
    estimates = []
    for _ in range(BATCHES):
        with torch.no_grad():
            probs = torch.softmax(policy.actor(rollout.obs[:, 0]), -1)[0]
            rollout.values[:, 0] = policy.value(rollout.obs[:, 0])
        actions = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        rollout.actions[0, 0] = actions
        rollout.rewards[0, 0] = MEAN_REWARDS[actions] + torch.randn(EPISODES_PER_BATCH, generator=generator)
        advantages, returns = algo.advantages(rollout)
        batch = rollout.batch(advantages, returns)
        log_probs = policy.distribution(policy.actor(batch.obs)).log_prob(batch.actions)
        loss = policy_gradient_loss(log_probs, batch.advantages, batch.mask, (batch.dones * batch.mask).sum(1))
        grads = torch.autograd.grad(-loss.sum(), list(policy.actor.parameters()))
        estimates.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(estimates)


def _assert_unbiased(estimates, exact):
    standard_error = estimates.std(0) / BATCHES**0.5
    assert ((estimates.mean(0) - exact).abs() <= 4 * standard_error + 1e-6).all(), (estimates.mean(0), exact)


@pytest.fixture(scope="module")
def vanilla():
    """Eq. 12's estimates (deterministic: fixed seeds), computed once for the module's tests."""
    policy = _bandit_policy()
    algo = PG([algo_config("pg")], policy, generators(0))
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
    with_baseline = _estimates(PGBaseline([algo_config("pg_baseline", f"baseline={baseline.value}")], policy, generators(0)))
    _assert_unbiased(with_baseline, _exact_gradient(policy))
    assert with_baseline.var(0).sum() < 0.2 * vanilla.var(0).sum()


def test_grad_var_diagnostic_sees_the_baseline():
    """Two identical runs in one group, the first with baselined advantages, the second with
    the raw returns: the first's score-function variance is far smaller, and each run's number
    is what it gets alone (a group of one)."""
    policy = _bandit_policy(runs=2)
    generator = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 3, (512,), generator=generator)
    returns = MEAN_REWARDS[actions] + torch.randn(512, generator=generator)
    advantages = torch.stack([returns - returns.mean(), returns])

    def batch(runs):
        zeros = torch.zeros(runs, 512)
        return Batch(
            torch.ones(runs, 512, 1), actions.expand(runs, 512), zeros, torch.zeros(runs, 512, 3), zeros,
            torch.ones(runs, 512, dtype=torch.bool), returns.expand(runs, 512), returns.expand(runs, 512), torch.ones(runs, 512),
        )

    variances = score_function_variance(policy, batch(2), advantages, generators(1, 2))
    assert variances.shape == (2,) and variances[0] < 0.1 * variances[1]
    for run in range(2):
        alone = score_function_variance(_bandit_policy(), batch(1), advantages[run:run + 1], generators(1))
        assert torch.allclose(alone, variances[run:run + 1], rtol=1e-4)


def _cartpole_batch(policy, size=64, ends_every=(8,), padding=(0,)):
    """Run r's batch: episodes ending every `ends_every[r]` steps, its last `padding[r]` slots masked."""
    runs = policy.num_runs
    generator = torch.Generator().manual_seed(3)
    obs = torch.randn(runs, size, 4, generator=generator)
    with torch.no_grad():
        dist_params = policy.actor(obs)
        actions = sample(policy.head, dist_params, list(range(runs)))
        old_log_probs = policy.distribution(dist_params).log_prob(actions)
    dones = torch.zeros(runs, size, dtype=torch.bool)
    mask = torch.ones(runs, size)
    for run in range(runs):
        dones[run, ::ends_every[run]] = True
        mask[run, size - padding[run]:] = 0
    advantages = torch.randn(runs, size, generator=generator)
    return Batch(obs, actions, old_log_probs, dist_params, torch.zeros(runs, size), dones, advantages, advantages, mask)


# Every algorithm with an importance-weighted surrogate (PPO's `policy_loss`), from the registry.
SURROGATES = [cls for _, cls in sorted(ALGORITHMS.items()) if hasattr(cls, "policy_loss")]
# Per-run hyperparameters that shape each surrogate (batchable, so one group may hold both).
SURROGATE_RUNS = {"ppo_clip": (["clip_eps=0.2"], ["clip_eps=0.05"]), "ppo_kl": (["beta_init=1.0"], ["beta_init=5.0"])}


@pytest.mark.parametrize("algo_class", SURROGATES, ids=lambda cls: cls.name)
def test_importance_sampling_identity_at_theta_old(algo_class):
    """At theta = theta_old the PPO objectives' gradient is eq. 13's estimate (eq. 16-17):
    grad r_t = grad log pi at r_t = 1, the clip is inactive and the KL is at its minimum.
    For a group of one, and for two runs with their own hyperparameters, episode lengths and
    padding."""
    for per_run, ends_every, padding in [(([],), (8,), (0,)), (SURROGATE_RUNS.get(algo_class.name, ([], [])), (8, 4), (0, 8))]:
        policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), policy_config(), True, generators(*range(len(per_run))))
        algo = algo_class([algo_config(algo_class.name, *overrides) for overrides in per_run], policy, generators(*range(len(per_run))))
        batch = _cartpole_batch(policy, ends_every=ends_every, padding=padding)
        params = list(policy.actor.parameters())

        dist_params = policy.actor(batch.obs)
        ratio = (policy.distribution(dist_params).log_prob(batch.actions) - batch.old_log_probs).exp()
        ppo_loss, _ = algo.policy_loss(ratio, batch.advantages, dist_params, batch)
        ppo_grads = torch.autograd.grad(ppo_loss.sum(), params)

        dist = policy.distribution(policy.actor(batch.obs))
        num_episodes = (batch.dones * batch.mask).sum(1)
        pg_loss = policy_gradient_loss(dist.log_prob(batch.actions), batch.advantages, batch.mask, num_episodes)
        pg_grads = torch.autograd.grad(pg_loss.sum(), params)
        # eq. 17 averages over samples, eq. 13 sums over steps and averages over episodes
        scale = batch.mask.sum(1) / num_episodes
        for ppo_grad, pg_grad in zip(ppo_grads, pg_grads):
            scaled = ppo_grad * scale.view(-1, *[1] * (ppo_grad.dim() - 1))
            assert torch.allclose(scaled, pg_grad, atol=1e-6)
            assert (pg_grad.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize(
    "kl, expected",
    [(0.001, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0), (0.015, 1.0), (0.0151, 2.0), (0.5, 2.0)],
)
def test_adaptive_beta_rule(kl, expected):
    """Schulman et al. 2017: beta /= 2 below d_targ / 1.5, beta *= 2 above 1.5 d_targ, else kept."""
    beta = adapt_kl_beta(torch.tensor([1.0]), torch.tensor([kl]), torch.tensor([0.01]), torch.tensor([1e-3]), torch.tensor([1e3]))
    assert beta.tolist() == [expected]


def test_adaptive_beta_rule_per_run():
    """Elementwise over runs, each with its own beta, KL, target and bounds."""
    beta = adapt_kl_beta(
        kl_beta=torch.tensor([1.0, 1.0, 4.0, 0.4, 8.0]),
        kl=torch.tensor([0.001, 0.001, 0.02, 0.001, 1.0]),
        kl_target=torch.tensor([0.01, 0.0001, 0.02, 0.01, 0.01]),
        beta_min=torch.tensor([0.3, 0.3, 0.3, 0.3, 0.3]),
        beta_max=torch.tensor([10.0, 10.0, 10.0, 10.0, 10.0]),
    )
    # halved; doubled (0.001 > 1.5 * 0.0001); kept; halved to 0.2 but floored at 0.3; doubled to 16 but capped at 10
    assert beta.tolist() == pytest.approx([0.5, 2.0, 4.0, 0.3, 10.0])


def test_ppo_kl_update_adapts_beta_only_when_adaptive():
    """Each run of a group adapts its own beta (beta_init 1 and 8); a run that is not active
    keeps its beta."""
    for adaptive in (True, False):
        for active, expected in [((True, True), (2.0, 10.0) if adaptive else (1.0, 8.0)), ((False, True), (1.0, 10.0) if adaptive else (1.0, 8.0))]:
            policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), policy_config(), True, generators(0, 1))
            configs = [
                algo_config("ppo_kl", f"adaptive={adaptive}", f"beta_init={beta}", "kl_target=1e-6", "lr=1e-2") for beta in (1.0, 8.0)
            ]
            algo = PPOKL(configs, policy, generators(0, 1))
            algo.active = torch.tensor(active)
            batch = _cartpole_batch(policy, ends_every=(8, 8), padding=(0, 0))
            stats = algo.update(batch)
            assert stats["kl_beta"].tolist() == [1.0, 8.0] and "kl_penalty" in stats  # the betas this update used
            change = policy_change(policy, batch)
            moved = torch.tensor(active)
            assert (change["kl"][moved] > 1.5e-6).all() and (change["kl"][~moved] == 0).all()  # an inactive run did not move
            algo.after_update({**stats, **change})
            assert algo.kl_beta.tolist() == list(expected)  # the update moved KL far past 1.5e-6: doubled, within beta_max
