"""Whatever a user types after `rlrun train`, the answer is a run or a clean refusal."""

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from conftest import TINY, run_rlrun

KEYS = [
    "algo", "env", "seed", "total_timesteps", "eval_episodes", "algo.lr", "algo.gamma",
    "algo.clip_eps", "algo.epochs", "algo.target_kl", "algo.num_minibatches", "env.num_envs",
    "policy.activation", "policy.hidden_sizes", "algo.no_such_key", "no_such_group",
]
VALUES = st.one_of(
    st.integers(-3, 40).map(str),
    st.floats(width=32).map(str),  # nan, inf and friends included
    st.sampled_from(["null", "true", "abc", "[1,2]", "[]", "ppo_kl", "pg", "CartPole-v1", "", "'x y'", "{a: 1}", "1e-3", "${seed}"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8),
)
OVERRIDES = st.lists(st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEYS), VALUES), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=OVERRIDES)
def test_random_overrides_run_or_are_refused_cleanly(tmp_path, overrides):
    result = run_rlrun("train", *TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    if result.returncode == 1:  # a run that started and diverged (e.g. algo.lr=inf)
        assert "Training diverged" in output, output
    else:
        assert result.returncode in (0, 2), output
        assert result.returncode == 0 or output.strip(), "a refusal must say why"
