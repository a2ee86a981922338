"""Whatever a user types after `rlrun train`, the answer is a run or a clean refusal.

Each example is a real `rlrun` subprocess (about 2 s): the default suite tries a few, the
slow suite the full corpus."""

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from helpers import TINY, run_rlrun

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
_example = itertools.count()
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run_or_refuse_cleanly(tmp_path, overrides):
    # A directory of its own per example: with one shared run directory every example after
    # the first completed run would only be refused for writing over it.
    workdir = tmp_path / f"example{next(_example)}"
    workdir.mkdir()
    result = run_rlrun("train", *TINY, *overrides, f"hydra.run.dir={workdir / 'run'}", cwd=workdir)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    if result.returncode == 1:  # a run that started and diverged (e.g. algo.lr=inf)
        assert "Training diverged" in output, output
    else:
        assert result.returncode in (0, 2), output
        assert result.returncode == 0 or output.strip(), "a refusal must say why"
        assert "already holds a run" not in output, output


@settings(max_examples=5, **SETTINGS)
@given(overrides=OVERRIDES)
def test_random_overrides_run_or_are_refused_cleanly(tmp_path, overrides):
    _run_or_refuse_cleanly(tmp_path, overrides)


@pytest.mark.slow(reason="25 subprocesses of about 2 s each")
@settings(max_examples=25, **SETTINGS)
@given(overrides=OVERRIDES)
def test_random_overrides_run_or_are_refused_cleanly_full_corpus(tmp_path, overrides):
    _run_or_refuse_cleanly(tmp_path, overrides)
