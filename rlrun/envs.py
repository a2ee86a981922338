"""Vector environments built from an `EnvConfig` (Gymnasium's, or EnvPool's), and the running
statistics that normalise what they return."""

from __future__ import annotations

import difflib
import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium.wrappers import RecordVideo
from gymnasium.wrappers.utils import RunningMeanStd

from rlrun.config import EnvConfig
from rlrun.errors import RLRunError

# Families of Gymnasium environments that need an extra, by their entry point's package.
EXTRAS = {"gymnasium.envs.box2d": "box2d", "gymnasium.envs.mujoco": "mujoco"}
# Environments whose whole state pickles faithfully (pure Python and numpy); others, such as
# MuJoCo's (C state that pickles without error but not faithfully), restart episodes on resume.
EXACTLY_RESTORABLE = ("gymnasium.envs.classic_control",)
EPSILON = 1e-8  # NormalizeObservation's and NormalizeReward's default: x / sqrt(var + EPSILON)
ENVPOOL_SEEDS = 2**31 - 1  # EnvPool takes int32 seeds in [0, 2^31 - 1)


def make_vector_env(config: EnvConfig, num_envs: int | None = None, video_dir: Path | None = None) -> VectorEnv:
    """`num_envs` copies of `config.id` (default `config.num_envs`), returning what the
    environments return: normalisation and episode statistics are the collector's
    (`Normalizers`), and the sub-environments' info dicts are dropped. The observations a step
    returns may be the vector env's own buffer (Gymnasium's copy=False, EnvPool's): copy them
    before the next step.

    Every vector env here autoresets in NEXT_STEP mode (Gymnasium's default, the only mode the
    numpy-vectorised CartPole has, and EnvPool's); the collector relies on it. With
    `video_dir`, sync Gymnasium copies that render and record every episode to MP4 there.
    """
    num_envs = num_envs or config.num_envs
    if config.vectorization == "envpool":
        return _make_envpool(config.id, num_envs)
    _check_registered(config.id)
    mode = config.vectorization or ("vector_entry_point" if gym.spec(config.id).vector_entry_point else "sync")
    options: dict[str, Any] = {}
    wrappers: list[Callable[[gym.Env], gym.Env]] = []
    if video_dir is not None:
        mode, options["render_mode"] = "sync", "rgb_array"
        wrappers.append(lambda env: RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, disable_logger=True))
    if mode in ("sync", "async"):  # a vector_entry_point env takes neither (and CartPole's returns empty infos)
        options["wrappers"] = [*wrappers, WithoutInfo]
        options["vector_kwargs"] = {"copy": False}
    if mode == "async":
        options["vector_kwargs"]["context"] = "fork"  # workers inherit the signal mask
    with optional_dependencies(config.id, video=video_dir is not None), _workers_ignore_sigint(mode == "async"):
        return gym.make_vec(config.id, num_envs=num_envs, vectorization_mode=mode, **options)


class WithoutInfo(gym.Wrapper):
    """A sub-environment whose info dicts are empty: rlrun reads none, and a vector env merges
    every key of every sub-environment's info into arrays at every step (35 µs a step for
    MuJoCo's, a fifth of the step itself)."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return obs, reward, terminated, truncated, {}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(**kwargs)[0], {}


@contextmanager
def _workers_ignore_sigint(active: bool) -> Iterator[None]:
    """Subprocess workers forked here inherit a blocked SIGINT: the terminal's Ctrl-C, sent to
    the whole process group, must not kill the environments under the trainer's graceful
    stop. The trainer itself gets a Ctrl-C from this window once it is unblocked."""
    if not active:
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


# env.vectorization=envpool: EnvPool's C++ implementations, stepped in its own threads.
#
# What rlrun relies on, checked against EnvPool 1.2: NEXT_STEP autoreset (the step after a
# done returns the first observation of the next episode, reward 0, not done, and ignores its
# action), as Gymnasium's; terminated = done and not truncated, so an episode that fails on its
# last allowed step counts as truncated only (Gymnasium reports both) and that one step
# bootstraps. Actions reach it clipped to the bounds, as every engine gets them
# (GaussianHead.to_env). There is no snapshot (the pool does not pickle): a resumed run starts
# fresh episodes. Evaluation plays Gymnasium's implementation of the same id (rlrun/evaluation.py),
# so the id must be in both registries.


def _make_envpool(env_id: str, num_envs: int) -> VectorEnv:
    envpool = _import_envpool()
    _check_envpool_id(envpool, env_id)
    _check_registered(env_id)  # evaluation plays Gymnasium's implementation
    limit = gym.spec(env_id).max_episode_steps  # Gymnasium's, so training and evaluation episodes end alike
    kwargs = {"max_episode_steps": limit} if limit else {}
    return SeededEnvPool(lambda seed: _quietly_made(envpool, env_id, num_envs=num_envs, seed=seed, **kwargs))


def _quietly_made(envpool: Any, env_id: str, **kwargs: Any) -> VectorEnv:
    # EnvPool gives float64 bounds to float32 spaces, which Gymnasium's Box warns about when
    # the pool builds them, on first use: nothing a user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32")
        envs = envpool.make_gymnasium(env_id, **kwargs)
        envs.observation_space, envs.action_space  # built on this first use, here
    return envs


class SeededEnvPool(VectorWrapper):
    """An EnvPool vector env seeded as Gymnasium's are. EnvPool seeds sub-environment i with
    seed + i, as Gymnasium's `reset(seed=seed)` does, but only when it makes the pool (its
    reset ignores a seed): a seeded reset here makes the pool anew, so a run's seed, a resumed
    run's seed + global_step and an evaluation's seed each start the episodes they name. Seeds
    beyond EnvPool's int32 range wrap around."""

    def __init__(self, make: Callable[[int], VectorEnv]):
        self._make = make
        super().__init__(make(0))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.env.close()
            self.env = self._make(seed % ENVPOOL_SEEDS)
        return self.env.reset(options=options)


def _import_envpool() -> Any:
    try:
        import envpool
    except ImportError:
        raise RLRunError(
            "env.vectorization=envpool needs EnvPool, which is not installed. Install it with: "
            "pip install 'rlrun[envpool]', or choose another env.vectorization (null, sync, async, vector_entry_point)."
        ) from None
    return envpool


def _check_envpool_id(envpool: Any, env_id: str) -> None:
    known = envpool.list_all_envs()
    if env_id in known:
        return
    close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise RLRunError(
        f"EnvPool has no environment {env_id!r} (env.vectorization=envpool).{hint} "
        "`python -c 'import envpool; print(envpool.list_all_envs())'` lists its ids; for an id only "
        "Gymnasium has, choose another env.vectorization (null, sync, async, vector_entry_point)."
    )


# Runs of a group: all of them (a slice, so no copies) or some (their indices).
Rows = slice | np.ndarray


class RunningMeanStds:
    """The running mean, variance and count of R streams of values, one per run of a group:
    (R, *shape) arrays updated for any rows in one go. The arithmetic is Gymnasium's
    RunningMeanStd (gymnasium/wrappers/utils.py: the parallel combination of moments, the count
    starting at 1e-4), dtypes included: the statistics take the dtype of their update's
    result, as Gymnasium's do (NormalizeObservation's start as float32 and become float64 at
    the first update with float64 observations)."""

    def __init__(self, num_runs: int, shape: tuple[int, ...], dtype: np.dtype):
        self.mean = np.zeros((num_runs, *shape), dtype=dtype)
        self.var = np.ones((num_runs, *shape), dtype=dtype)
        self.count = np.full((num_runs,) + (1,) * len(shape), 1e-4)  # broadcasts against mean

    def update(self, runs: Rows, batch_mean: np.ndarray, batch_var: np.ndarray, batch_count: int | np.ndarray) -> None:
        """update_mean_var_count_from_moments for the `runs`, each with its batch's moments
        (runs, *shape) and count (one for all, or per run shaped as `count`)."""
        mean, var, count = self.mean[runs], self.var[runs], self.count[runs]
        total = count + batch_count
        delta = batch_mean - mean
        # Gymnasium's counts are Python numbers, which NumPy casts to the dtype of the array
        # they meet (NEP 50): float32 statistics take float32 counts.
        scaled_count, scaled_total = _cast(batch_count, delta.dtype), total.astype(delta.dtype, copy=False)
        self.mean = _stored(self.mean, runs, mean + delta * scaled_count / scaled_total)
        m2 = (
            var * count.astype(var.dtype, copy=False) + batch_var * _cast(batch_count, batch_var.dtype)
            + np.square(delta) * count.astype(delta.dtype, copy=False) * scaled_count / scaled_total
        )
        self.var = _stored(self.var, runs, m2 / total.astype(m2.dtype, copy=False))
        self.count[runs] = total

    def state(self, run: int) -> dict[str, Any]:
        """Run `run`'s statistics as plain data (float64 values as Python floats: exact), the
        checkpoint format."""
        return {"mean": self.mean[run].tolist(), "var": self.var[run].tolist(), "count": self.count[run].item()}

    def load_state(self, run: int, state: dict[str, Any]) -> None:
        self.mean[run], self.var[run], self.count[run] = state["mean"], state["var"], state["count"]

    def stats(self, run: int) -> RunningMeanStd:
        """A copy of run `run`'s statistics as Gymnasium's object."""
        stats = RunningMeanStd(shape=self.mean.shape[1:], dtype=self.mean.dtype)
        stats.mean, stats.var, stats.count = self.mean[run].copy(), self.var[run].copy(), self.count[run].item()
        return stats


def _stored(array: np.ndarray, runs: Rows, values: np.ndarray) -> np.ndarray:
    """`array` with `values` in the rows of `runs`, in the dtype of `values` if that differs."""
    if values.dtype != array.dtype:
        array = array.astype(values.dtype)
    array[runs] = values
    return array


def _cast(count: int | np.ndarray, dtype: np.dtype) -> int | np.ndarray:
    """A count as a Python int (NumPy casts it itself) or an array cast as NumPy would cast one."""
    return count if isinstance(count, int) else count.astype(dtype, copy=False)


def _moments(x: np.ndarray, counted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int | np.ndarray]:
    """np.mean, np.var and the count along axis 1 (the envs) of `x` (runs, envs, ...), of the
    `counted` envs only if given (runs, envs; `x` 2-D). Computed as numpy computes them, a sum
    then a division by the count, so they are Gymnasium's to the bit; but where some envs do
    not count and 8 or more do, the sum may round differently (numpy adds 8 or more terms
    pairwise, and the envs left out change the pairs)."""
    if counted is None:
        count = x.shape[1]
        mean = x.sum(1) / count
        deviations = x - mean[:, None]
    else:
        count = counted.sum(1)
        mean = np.where(counted, x, 0).sum(1) / count.astype(x.dtype)
        deviations = np.where(counted, x - mean[:, None], 0)
    return mean, (deviations * deviations).sum(1) / _cast(count, x.dtype), count


def normalized(obs: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """NormalizeObservation's output: float32 (obs - mean) / sqrt(var + EPSILON)."""
    return ((obs - mean) / np.sqrt(var + EPSILON)).astype(np.float32)


class Normalizers:
    """What Gymnasium's NormalizeObservation and NormalizeReward vector wrappers do
    (gymnasium/wrappers/vector/stateful_observation.py and stateful_reward.py), for the R runs
    of a group at once: (R, ...) arrays, one numpy update per step for all runs.

    Not the wrappers themselves: on arrays this small numpy's cost is its fixed cost per call,
    which the wrappers pay per run at every step (RunningMeanStd.update alone 44 µs, the two
    wrappers about 95 µs, more than half a MuJoCo step). The arithmetic is theirs, dtypes
    included, and tests/test_normalization.py checks that the outputs equal theirs.
    Observations: every step's update the statistics, NEXT_STEP reset steps included, and come
    out as float32 (obs - mean) / sqrt(var + 1e-8). Rewards: divided by sqrt(var + 1e-8) of the
    running discounted return, which a termination resets, a truncation does not, and reset
    steps leave alone. No clipping, as in Gymnasium 1.x.
    """

    def __init__(self, num_runs: int, num_envs: int, obs_space: gym.spaces.Box, config: EnvConfig, discounts: list[float]):
        # NormalizeObservation's statistics start in the dtype of its float32 observation space.
        self.obs = RunningMeanStds(num_runs, obs_space.shape, np.dtype(np.float32)) if config.normalize_obs else None
        self.returns = RunningMeanStds(num_runs, (), np.dtype(np.float64)) if config.normalize_reward else None
        # NormalizeReward's gamma is a Python float, so float32 in its float32 product.
        self.discounts = np.array(discounts, dtype=np.float32)[:, None]
        self.discounted_returns = np.zeros((num_runs, num_envs), dtype=np.float32)

    def observations(self, runs: Rows, obs: np.ndarray) -> np.ndarray:
        """The `runs`' observations (runs, N, ...), normalised after updating the statistics
        with them."""
        if self.obs is None:
            return obs
        self.obs.update(runs, *_moments(obs))
        return normalized(obs, self.obs.mean[runs][:, None], self.obs.var[runs][:, None])

    def rewards(self, runs: Rows, rewards: np.ndarray, terminated: np.ndarray, counting: np.ndarray) -> np.ndarray:
        """The `runs`' rewards (runs, N), scaled after updating the discounted returns of the
        envs `counting` (not at a reset step) and the statistics with them."""
        if self.returns is None:
            return rewards
        returns = self.discounted_returns[runs]
        moved = returns * self.discounts[runs] * (1 - terminated) + rewards
        if counting.all():  # the common case: no env at a reset step, no masks
            returns = moved.astype(np.float32)
            self.returns.update(runs, *_moments(returns))
        else:
            returns = np.where(counting, moved, returns).astype(np.float32)
            some = counting.any(1)
            indices = np.arange(len(self.discounts))[runs][some]
            self.returns.update(indices, *_moments(returns[some], counting[some]))
        self.discounted_returns[runs] = returns
        return rewards / np.sqrt(self.returns.var[runs][:, None] + EPSILON)

    def reset(self, runs: Rows) -> None:
        """The `runs` start new episodes: no discounted return carries over."""
        self.discounted_returns[runs] = 0

    def state(self, run: int) -> dict[str, dict[str, Any]]:
        """Run `run`'s statistics by name ("obs", "return": those normalised), the checkpoint format."""
        return {name: stats.state(run) for name, stats in self._named() if stats is not None}

    def load_state(self, run: int, state: dict[str, dict[str, Any]]) -> None:
        for name, stats in self._named():
            if stats is not None and name in state:
                stats.load_state(run, state[name])

    def obs_stats(self, run: int) -> RunningMeanStd | None:
        """Run `run`'s observation statistics (a copy, for evaluation), or None without normalisation."""
        return None if self.obs is None else self.obs.stats(run)

    def _named(self) -> list[tuple[str, RunningMeanStds | None]]:
        return [("obs", self.obs), ("return", self.returns)]


def running_stats(state: dict[str, Any]) -> RunningMeanStd:
    """A checkpoint's statistics (`Normalizers.state`) as Gymnasium's object."""
    stats = RunningMeanStd(shape=np.shape(state["mean"]))
    stats.mean, stats.var, stats.count = np.array(state["mean"]), np.array(state["var"]), state["count"]
    return stats


def snapshot(config: EnvConfig, envs: VectorEnv) -> bytes | None:
    """The environments mid-episode, pickled, when that restores them exactly."""
    if not _entry_module(config.id).startswith(EXACTLY_RESTORABLE) or config.vectorization in ("async", "envpool"):
        return None
    return cloudpickle.dumps(envs)


@contextmanager
def optional_dependencies(env_id: str, video: bool = False) -> Iterator[None]:
    """Turn Gymnasium's missing-dependency errors (at make, reset or render) into user errors
    that name the rlrun extra to install."""
    try:
        yield
    except gym.error.DependencyNotInstalled as err:
        module = _entry_module(env_id)
        extras = [extra for prefix, extra in EXTRAS.items() if module.startswith(prefix)] + (["video"] if video else [])
        fix = f"Install it with: pip install 'rlrun[{','.join(extras)}]'. " if extras else ""
        raise RLRunError(f"{env_id} needs an optional dependency that is not installed. {fix}Gymnasium says: {err}") from None


def _entry_module(env_id: str) -> str:
    entry_point = gym.spec(env_id).entry_point
    return entry_point.split(":")[0] if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")


def max_episode_steps(config: EnvConfig) -> int:
    """The time limit of `config.id`; algorithms that need whole episodes need one."""
    limit = gym.spec(config.id).max_episode_steps
    if limit is None:
        raise RLRunError(
            f"Environment {config.id} has no time limit, but this algorithm collects whole "
            "episodes and needs every episode to end."
        )
    return limit


def _check_registered(env_id: str) -> None:
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, gym.registry.keys(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise RLRunError(
        f"Unknown Gymnasium environment {env_id!r}.{hint} Environments with a tuned config "
        "are listed by `rlrun train --help` (group env)."
    )
