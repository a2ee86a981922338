"""Reading a sweep back: runs, their curves (from TensorBoard event files) and statistics.

Runs may still be in progress, have failed, have been killed, or have damaged files: every
reader here tolerates missing files and missing tags, marks what it cannot read, and says
what it skipped.
"""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from omegaconf import OmegaConf

from rlrun.checkpoint import SUMMARY_FILE
from rlrun.config import flatten
from rlrun.errors import RLRunError
from rlrun.tracking import TENSORBOARD_SUBDIR

RETURN_TAG = "rollout/episodic_return"
RECENT_RETURN_TAG = "rollout/recent_return"  # mean of the last 20 training episodes
OPTUNA_RESULTS = "optimization_results.yaml"  # hydra-optuna-sweeper's best_params, best_value
SUMMARY_NUMBERS = ("eval_return_mean", "eval_return_std", "train_return_recent", "env_steps", "wall_seconds")


class DamagedFile(Exception):
    """A file that exists but does not hold what the trainer or Hydra writes."""


def _yaml(text: str) -> Any:
    return OmegaConf.to_container(OmegaConf.create(text))  # OmegaConf's YAML reads 1e-3 as a float


def _why(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        return f"invalid YAML ({err.problem} at line {err.problem_mark.line + 1})"
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _read_file(file: Path, parse: Callable[[str], Any], expected: type = dict, label: str | None = None) -> Any:
    """What a JSON or YAML file holds; DamagedFile saying why if that is not an `expected`."""
    label = label or file.name
    try:
        text = file.read_bytes().decode()
        data = parse(text) if text.strip() else None
    except Exception as err:  # truncated, binary or hand-edited files fail in many ways
        raise DamagedFile(f"{label}: {_why(err)}") from None
    if data is None:
        raise DamagedFile(f"{label}: empty")
    if not isinstance(data, expected):
        raise DamagedFile(f"{label}: holds a {type(data).__name__}, not a {'mapping' if expected is dict else expected.__name__}")
    return data


def _check_summary(summary: dict[str, Any]) -> None:
    wrong = [key for key in SUMMARY_NUMBERS if key in summary and summary[key] is not None and not _is_number(summary[key])]
    if not isinstance(summary.get("status", ""), str):
        wrong.insert(0, "status")
    if wrong:
        raise DamagedFile(f"{SUMMARY_FILE}: unexpected {', '.join(wrong)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(eq=False)
class Run:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # flat config keys, plus algo / env names
    overrides: dict[str, str] = field(default_factory=dict)  # the job's command-line overrides
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json; {} until written
    damage: str | None = None  # why one of its files could not be read

    @classmethod
    def load(cls, path: Path) -> Run:
        run = cls(path)
        try:
            run._read_files()
        except DamagedFile as err:
            run.damage = str(err)
        return run

    def _read_files(self) -> None:
        hydra = self._read(".hydra/hydra.yaml", _yaml)
        if hydra is not None:
            choices = hydra
            for key in ("hydra", "runtime", "choices"):
                choices = choices.get(key) if isinstance(choices, dict) else None
            if not isinstance(choices, dict):
                raise DamagedFile(".hydra/hydra.yaml: no hydra.runtime.choices")
            self.info.update({group: name for group, name in choices.items() if not group.startswith("hydra/")})
        for override in map(str, self._read(".hydra/overrides.yaml", _yaml, list) or []):
            key, _, value = override.partition("=")
            self.overrides[key.lstrip("+~")] = value
        self.info.update(flatten(self._read("config.yaml", _yaml) or {}))  # resolved: absent until the job has started
        self.summary = self._read(SUMMARY_FILE, json.loads) or {}
        _check_summary(self.summary)

    def _read(self, name: str, parse: Callable[[str], Any], expected: type = dict) -> Any:
        """The run's file `name`, parsed; None while it is not written."""
        file = self.path / name
        return _read_file(file, parse, expected, label=name) if file.is_file() else None

    @property
    def status(self) -> str:
        """completed, failed, interrupted, running, damaged (a file unreadable), or dead: a run
        that says it is running on this machine but whose process is gone (killed before it
        finished; `rlrun train resume=DIR` continues it)."""
        if self.damage:
            return "damaged"
        status = self.summary.get("status", "running")
        return "dead" if status == "running" and self._process_gone() else status

    def _process_gone(self) -> bool:
        """Whether the process that wrote "running" has ended. Only one on this machine can be
        checked; a pid reused since by another process reads as alive."""
        pid = self.summary.get("pid")
        if self.summary.get("host") != socket.gethostname() or not _is_number(pid) or pid != int(pid) or pid <= 0:
            return False
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False

    def value(self, key: str) -> Any:
        """A config key's value; for keys the config lacks, the override's text."""
        return self.info.get(key, self.overrides.get(key))

    @cached_property
    def scalars(self) -> dict[str, list[Any]]:
        """Every scalar tag's events, read once with TensorBoard's own reader ({} if none yet)."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        if not (self.path / TENSORBOARD_SUBDIR).is_dir():
            return {}
        events = EventAccumulator(str(self.path / TENSORBOARD_SUBDIR), size_guidance={"scalars": 0})
        events.Reload()
        return {tag: events.Scalars(tag) for tag in events.Tags().get("scalars", [])}

    def curve(self, tag: str = RETURN_TAG, x: str = "steps") -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one scalar tag; x in env steps or seconds since the run's first event."""
        scalars = self.scalars.get(tag)
        if not scalars:
            return np.array([]), np.array([])
        values = np.array([event.value for event in scalars])
        if x == "seconds":
            times = np.array([event.wall_time for event in scalars])
            return times - times[0], values
        return np.array([event.step for event in scalars], dtype=float), values

    def reaching(self, threshold: float | None) -> tuple[float | None, float | None]:
        """Env steps and seconds until the last 20 training episodes first averaged `threshold`."""
        if threshold is None:
            return None, None
        steps, seconds = (first_reaching(*self.curve(RECENT_RETURN_TAG, x), threshold) for x in ("steps", "seconds"))
        return steps, seconds


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every run directory (one with Hydra's .hydra/) below `sweep_dir`, in name order."""
    if not sweep_dir.is_dir():
        raise RLRunError(f"{sweep_dir} is not a directory.")
    runs = [Run.load(hydra_dir.parent) for hydra_dir in sorted(sweep_dir.rglob(".hydra")) if (hydra_dir / "config.yaml").is_file()]
    if not runs:
        raise RLRunError(f"No runs found in {sweep_dir} (looked for run directories holding .hydra/).")
    return runs


def group_runs(runs: list[Run], key: str) -> dict[str, list[Run]]:
    known = set().union(*(run.info for run in runs))
    if key not in known:
        raise RLRunError(f"Cannot group by {key!r}: the runs have no such key. Keys: {', '.join(sorted(known))}.")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(str(run.info.get(key, "?")), []).append(run)
    return groups


def by_env(groups: dict[str, list[Run]]) -> dict[str, dict[str, list[Run]]]:
    """The groups split per environment id: returns of different tasks are never averaged."""
    panels: dict[str, dict[str, list[Run]]] = {}
    for name, runs in groups.items():
        for run in runs:
            panels.setdefault(str(run.info.get("env.id", "?")), {}).setdefault(name, []).append(run)
    return panels


def on_grid(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Curves interpolated on one x grid, (runs, points), up to where the longest run ends;
    NaN where a run has no data (before its first logged point, after its last)."""
    grid = np.linspace(0, max(x[-1] for x, _ in curves), points)
    values = np.full((len(curves), points), np.nan)
    for row, (x, y) in zip(values, curves):
        covered = (grid >= x[0]) & (grid <= x[-1])
        row[covered] = np.interp(grid[covered], x, y)
    return grid, values


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and a percentile-bootstrap confidence band, ignoring NaNs."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    tail = (1 - confidence) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # grid points no resample has data for
        means = np.nanmean(values[picks], axis=1)  # (resamples, points)
        low, high = np.nanpercentile(means, [tail, 100 - tail], axis=0)
        return np.nanmean(values, axis=0), low, high


def interquartile_mean(values: list[float]) -> float:
    """Mean of the middle half (25% trimmed from each end), robust to an outlier seed."""
    ordered = np.sort(values)
    cut = int(0.25 * len(ordered))
    return float(ordered[cut: len(ordered) - cut].mean())


def first_reaching(x: np.ndarray, y: np.ndarray, threshold: float) -> float | None:
    reached = np.flatnonzero(y >= threshold)
    return float(x[reached[0]]) if reached.size else None


def plot_curves(groups: dict[str, list[Run]], x: str, output: Path, title: str) -> list[str]:
    """Mean and 95% bootstrap band of the training return per group into a PNG, one panel per
    environment (1200x750 for one). A group's mean and band run to its longest run's end,
    over the runs still present: solid where all its runs have data, dashed where some do not.

    Returns notes: runs left out (no return logged), groups whose runs end more than 5%
    of the x range apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {run: run.curve(RETURN_TAG, x) for runs in groups.values() for run in runs}
    notes = [f"{run.path.name}: no {RETURN_TAG} logged ({run.status}), left out" for run, (xs, _) in curves.items() if xs.size == 0]
    panels = by_env({name: [run for run in runs if curves[run][0].size] for name, runs in groups.items()})
    columns = min(len(panels), 3) or 1
    rows = -(-len(panels) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(8, 5) if len(panels) <= 1 else (5 * columns, 4 * rows + 0.5), dpi=150, squeeze=False)
    figure.suptitle(f"{', '.join(panels) or 'no runs with returns yet'}: {title}")
    for ax, (env_id, panel) in zip(axes.flat, panels.items()):
        prefix = f"{env_id}, " if len(panels) > 1 else ""
        for name, runs in panel.items():
            notes += [prefix + note for note in _draw_group(ax, name, [curves[run] for run in runs], x)]
        ax.set_title(env_id if len(panels) > 1 else "")
        ax.set_xlabel("environment steps" if x == "steps" else "seconds")
        ax.set_ylabel("episodic return (training)")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    figure.tight_layout()
    figure.savefig(output, metadata={"Title": figure.get_suptitle()})
    plt.close(figure)
    return notes


def _draw_group(ax: Any, label: str, curves: list[tuple[np.ndarray, np.ndarray]], x: str) -> list[str]:
    grid, values = on_grid(curves)
    mean, low, high = bootstrap_ci(values)
    everyone = (~np.isnan(values)).all(axis=0)
    (line,) = ax.plot(grid, np.where(everyone, mean, np.nan), label=f"{label} (n={len(curves)})")
    ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
    if everyone.all():
        return []
    beside_partial = np.convolve(~everyone, np.ones(3), "same") > 0  # so dashes meet the solid line
    ax.plot(grid, np.where(beside_partial, mean, np.nan), "--", color=line.get_color())
    ends = sorted(x_[-1] for x_, _ in curves)
    if ends[0] >= 0.95 * ends[-1]:
        return []  # runs of one budget end a rollout or so apart: not worth a note
    first, last = (format(end, ",.0f" if x == "steps" else ".1f") for end in (ends[0], ends[-1]))
    return [f"{label}: runs end between {first} and {last} {x}; past {first} the mean and band are over the runs still going (dashed)"]


def summary_rows(groups: dict[str, list[Run]], threshold: float | None) -> list[dict[str, Any]]:
    """Per group: final evaluation return across completed runs, and the env steps and seconds
    until the mean of the last 20 training episodes first reached `threshold`."""
    rows = []
    for name, runs in groups.items():
        finals = [run.summary["eval_return_mean"] for run in runs if run.status == "completed" and run.summary.get("eval_return_mean") is not None]
        reached = [reach for reach in (run.reaching(threshold) for run in runs) if reach[0] is not None]
        rows.append({
            "group": name,
            "runs": len(runs),
            "completed": len(finals),
            "final_mean": float(np.mean(finals)) if finals else None,
            "final_std": float(np.std(finals)) if finals else None,
            "final_iqm": interquartile_mean(finals) if finals else None,
            "reached": len(reached),
            "steps_to_threshold": float(np.median([steps for steps, _ in reached])) if reached else None,
            "seconds_to_threshold": float(np.median([seconds for _, seconds in reached])) if reached else None,
        })
    return rows


def swept_keys(runs: list[Run]) -> list[str]:
    """The override keys whose values differ between runs: what the sweep varied."""
    keys = dict.fromkeys(key for run in runs for key in run.overrides)
    return [key for key in keys if len({str(run.value(key)) for run in runs}) > 1]


def run_rows(runs: list[Run], threshold: float | None) -> list[dict[str, Any]]:
    """One row per run, best final evaluation return first; runs that did not complete last."""
    keys = swept_keys(runs)
    rows = []
    for run in runs:
        recent, latest = run.summary.get("train_return_recent"), run.curve(RECENT_RETURN_TAG)[1]
        if recent is None and latest.size:
            recent = float(latest[-1])  # a run still going: its latest
        steps, seconds = run.reaching(threshold)
        rows.append({
            "run": run, "swept": {key: run.value(key) for key in keys}, "status": run.status,
            "final": run.summary.get("eval_return_mean"), "recent": recent, "steps_to_threshold": steps,
            "seconds_to_threshold": seconds,
        })
    return sorted(rows, key=lambda row: (row["status"] != "completed", row["final"] is None, -(row["final"] or 0), row["status"]))


def optuna_best(sweep_dir: Path, runs: list[Run]) -> tuple[float, dict[str, Any], list[Run]] | None:
    """Optuna's best value and parameters and the runs whose config matches them; None if the
    sweep has no Optuna results, DamagedFile if they cannot be read."""
    file = sweep_dir / OPTUNA_RESULTS
    if not file.is_file():
        return None
    results = _read_file(file, _yaml)
    params, value = results.get("best_params"), results.get("best_value")
    if not isinstance(params, dict) or not _is_number(value):
        raise DamagedFile(f"{OPTUNA_RESULTS}: no best_params and best_value")
    return value, params, [run for run in runs if all(_same(run.info.get(key), wanted) for key, wanted in params.items())]


def _same(value: Any, wanted: Any) -> bool:
    if _is_number(value) and _is_number(wanted):
        return math.isclose(value, wanted, rel_tol=1e-9)
    return str(value) == str(wanted)


def default_threshold(runs: list[Run]) -> float | None:
    """Gymnasium's reward threshold for the sweep's environment, when there is one."""
    import gymnasium as gym

    env_ids = {run.info.get("env.id") for run in runs} - {None}
    if len(env_ids) != 1:
        return None
    (env_id,) = env_ids
    return gym.spec(env_id).reward_threshold if env_id in gym.registry else None
