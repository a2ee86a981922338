"""Whatever a user types after `rlrun train`, the answer is a run or a clean refusal: never a
traceback, every refusal exit 2 with a message (1 only for a run that started and failed).

Hypothesis draws command lines of random keys (real, misspelt, nested, hydra.*), groups,
prefixes (+, ++, ~), and values of every type: NaN, inf, huge and negative numbers, unicode,
lists and dicts, shell and resolver syntax. Each runs the real CLI in-process (Typer's
CliRunner: the same code path as the console script, without the interpreter's start-up), so
the default suite affords a sample and `-m slow` the full corpus.
"""

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from typer.testing import CliRunner

from helpers import TINY
from rlrun.cli import app

KEYS = [
    "algo", "env", "tuned", "hparams_search", "seed", "total_timesteps", "eval_episodes", "eval_interval",
    "checkpoint_interval", "target_return", "torch_threads", "resume", "algo.lr", "algo.gamma", "algo.clip_eps",
    "algo.epochs", "algo.target_kl", "algo.num_minibatches", "algo.baseline", "algo.beta_min", "env.num_envs",
    "env.normalize_obs", "env.vectorization", "env.id", "policy.activation", "policy.hidden_sizes",
    "policy.log_std_init", "algo.no_such_key", "no_such_group", "algo.lr.x", "hydra.run.dir", "hydra.job.chdir",
    "hydra/launcher", "hydra/sweeper", "", "k" * 300, "ü", "a b",
]
PREFIXES = ["", "", "", "+", "++", "~"]
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(str),  # nan, inf, -0.0, 1e308 and friends
    st.sampled_from([
        "null", "true", "2", "abc", "[1,2]", "[]", "[0]", "[1000000,1000000]", "{a: 1}", "ppo_kl", "pg", "a2c",
        "CartPole-v1", "NoSuch-v0", "", "'x y'", "1e-3", "1e5", "${seed}", "${oc.env:HOME}", "$(touch x)", "`id`",
        "; rm -rf /", "'", '"', "\\", "=", ",", "1,2", "range(1,3)", "choice(1,2)", "interval(0,1)", "x" * 300,
    ]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=10),
)
OVERRIDE = st.builds(lambda prefix, key, value: f"{prefix}{key}" if prefix == "~" else f"{prefix}{key}={value}", st.sampled_from(PREFIXES), st.sampled_from(KEYS), VALUES)
COMMAND = st.tuples(st.booleans(), st.lists(OVERRIDE, min_size=1, max_size=3))


def _run(tmp_path, multirun, overrides):
    # Last, so it wins: a run stops after 20 episodes whatever budget the overrides drew.
    stop_soon = "target_return=-1e9"
    args = ["train", *(["-m"] if multirun else []), *TINY, *overrides, stop_soon, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    result = CliRunner().invoke(app, args)
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (overrides, repr(result.exception), output)
    assert "Traceback" not in output, (overrides, output)
    if result.exit_code == 1:  # a run that started and failed says why: diverged, or a failed sweep job
        assert "Training diverged" in output or "failed" in output, (overrides, output)
    else:
        assert result.exit_code in (0, 2), (overrides, result.exit_code, output)
        assert result.exit_code == 0 or output.strip(), "a refusal must say why"
    return result.exit_code


def _fuzz(examples):
    # No `explain` phase: it traces execution, and Hydra re-raises instead of reporting under a tracer.
    @settings(
        max_examples=examples, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(command=COMMAND)
    def check(tmp_path_factory, command):
        _run(tmp_path_factory.mktemp("fuzz"), *command)

    return check


test_random_command_lines_run_or_are_refused_cleanly = _fuzz(15)
test_random_command_lines_full_corpus = pytest.mark.slow(_fuzz(250))  # slow: about 250 CLI invocations


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=99999999999999999999"], ["policy.hidden_sizes=[1000000,1000000]"], ["=5"], ["+="],
        ["~total_timesteps"], ["~seed"], ["algo.clip_eps=inf"], ["env.normalize_obs=2"], ["algo.lr=nan"],
        [f"hydra.run.dir=/tmp/{'d' * 300}"], ["+" + "k" * 300 + "=1"], ["total_timesteps=${oc.env:HOME}"],
    ],
)
def test_inputs_no_schema_check_caught_before_are_refused(tmp_path, overrides):
    assert _run(tmp_path, False, overrides) == 2
