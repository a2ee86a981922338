"""Reading a sweep back: runs, their curves (from TensorBoard event files) and statistics.

Runs may still be in progress or have failed: every reader here tolerates missing files and
missing tags, and says what it skipped.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from rlrun.checkpoint import SUMMARY_FILE
from rlrun.config import flatten
from rlrun.errors import RLRunError
from rlrun.tracking import TENSORBOARD_SUBDIR

RETURN_TAG = "rollout/episodic_return"
RECENT_RETURN_TAG = "rollout/recent_return"  # mean of the last 20 training episodes


@dataclass
class Run:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # flat config keys, plus algo / env names

    @classmethod
    def load(cls, path: Path) -> Run:
        info: dict[str, Any] = {}
        hydra_file = path / ".hydra" / "hydra.yaml"
        if hydra_file.is_file():
            choices = OmegaConf.to_container(OmegaConf.load(hydra_file).hydra.runtime.choices)
            info.update({group: name for group, name in choices.items() if not group.startswith("hydra/")})
        config_file = path / "config.yaml"  # resolved: absent until the job has started
        if config_file.is_file():
            info.update(flatten(OmegaConf.to_container(OmegaConf.load(config_file))))
        return cls(path, info)

    @cached_property
    def summary(self) -> dict[str, Any]:
        file = self.path / SUMMARY_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    @property
    def status(self) -> str:
        return self.summary.get("status", "running")

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


def on_grid(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Curves interpolated on one x grid, (runs, points), up to where the shortest run ends,
    so every point of a group's mean and band stands on all its runs; NaN before a run's
    first logged point."""
    x_max = min(x[-1] for x, _ in curves)
    grid = np.linspace(0, x_max, points)
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
    """Mean and 95% bootstrap band of the training return per group into a PNG (1200x750).

    Returns notes on runs left out (no return logged yet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes: list[str] = []
    figure, axes = plt.subplots(figsize=(8, 5), dpi=150)
    for name, runs in groups.items():
        curves = [run.curve(RETURN_TAG, x) for run in runs]
        notes += [f"{run.path.name}: no {RETURN_TAG} yet, left out" for run, (xs, _) in zip(runs, curves) if xs.size == 0]
        curves = [curve for curve in curves if curve[0].size]
        if not curves:
            continue
        grid, values = on_grid(curves)
        mean, low, high = bootstrap_ci(values)
        (line,) = axes.plot(grid, mean, label=f"{name} (n={len(curves)})")
        axes.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("environment steps" if x == "steps" else "seconds")
    axes.set_ylabel("episodic return (training)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)
    return notes


def summary_rows(groups: dict[str, list[Run]], threshold: float | None) -> list[dict[str, Any]]:
    """Per group: final evaluation return across completed runs, and the env steps and seconds
    until the mean of the last 20 training episodes first reached `threshold`."""
    rows = []
    for name, runs in groups.items():
        finals = [run.summary["eval_return_mean"] for run in runs if run.status == "completed" and run.summary.get("eval_return_mean") is not None]
        reach_steps, reach_seconds = [], []
        if threshold is not None:
            for run in runs:
                steps = first_reaching(*run.curve(RECENT_RETURN_TAG, "steps"), threshold)
                seconds = first_reaching(*run.curve(RECENT_RETURN_TAG, "seconds"), threshold)
                if steps is not None:
                    reach_steps.append(steps)
                    reach_seconds.append(seconds)
        rows.append({
            "group": name,
            "runs": len(runs),
            "completed": len(finals),
            "failed": [run.path.name for run in runs if run.status == "failed"],
            "running": sum(run.status == "running" for run in runs),
            "final_mean": float(np.mean(finals)) if finals else None,
            "final_std": float(np.std(finals)) if finals else None,
            "final_iqm": interquartile_mean(finals) if finals else None,
            "reached": len(reach_steps),
            "steps_to_threshold": float(np.median(reach_steps)) if reach_steps else None,
            "seconds_to_threshold": float(np.median(reach_seconds)) if reach_seconds else None,
        })
    return rows


def default_threshold(runs: list[Run]) -> float | None:
    """Gymnasium's reward threshold for the sweep's environment, when there is one."""
    import gymnasium as gym

    env_ids = {run.info.get("env.id") for run in runs} - {None}
    if len(env_ids) != 1:
        return None
    (env_id,) = env_ids
    return gym.spec(env_id).reward_threshold if env_id in gym.registry else None
