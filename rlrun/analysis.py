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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from omegaconf import OmegaConf

from rlrun import stats
from rlrun.checkpoint import SUMMARY_FILE
from rlrun.config import flatten, solved_return
from rlrun.errors import RLRunError
from rlrun.tracking import TENSORBOARD_SUBDIR

RETURN_TAG = "rollout/episodic_return"
RECENT_RETURN_TAG = "rollout/recent_return"  # mean of the last 20 training episodes
OPTUNA_RESULTS = "optimization_results.yaml"  # hydra-optuna-sweeper's best_params, best_value
SUMMARY_NUMBERS = ("eval_return_mean", "eval_return_std", "train_return_recent", "env_steps", "wall_seconds", "cpu_seconds")


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


def first_reaching(x: np.ndarray, y: np.ndarray, threshold: float) -> float | None:
    reached = np.flatnonzero(y >= threshold)
    return float(x[reached[0]]) if reached.size else None


def plot_curves(groups: dict[str, list[Run]], x: str, output: Path, title: str) -> list[str]:
    """Mean and 95% stratified-bootstrap band (rliable) of the training return per group into
    a PNG, one panel per
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
    figure, axes = _figure(plt, list(panels), title, "no runs with returns yet")
    for ax, (env_id, panel) in zip(axes.flat, panels.items()):
        prefix = f"{env_id}, " if len(panels) > 1 else ""
        for name, runs in panel.items():
            notes += [prefix + note for note in _draw_group(ax, name, [curves[run] for run in runs], x)]
        ax.set_title(env_id if len(panels) > 1 else "")
        ax.set_xlabel("environment steps" if x == "steps" else "seconds")
        ax.set_ylabel("episodic return (training)")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(plt, figure, axes, len(panels), output)
    return notes


def _figure(plt: Any, env_ids: list[str], title: str, empty: str) -> tuple[Any, Any]:
    """A figure of one panel per environment (1200x750 for one), titled with them."""
    columns = min(len(env_ids), 3) or 1
    rows = -(-len(env_ids) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(8, 5) if len(env_ids) <= 1 else (5 * columns, 4 * rows + 0.5), dpi=150, squeeze=False)
    figure.suptitle(f"{', '.join(env_ids) or empty}: {title}")
    return figure, axes


def _save(plt: Any, figure: Any, axes: Any, used: int, output: Path) -> None:
    for ax in axes.flat[used:]:
        ax.set_axis_off()
    figure.tight_layout()
    figure.savefig(output, metadata={"Title": figure.get_suptitle()})
    plt.close(figure)


def plot_profile(groups: dict[str, list[Run]], output: Path, title: str) -> list[str]:
    """rliable's performance profiles of the final evaluation return into a PNG: per group,
    the fraction of its completed runs scoring above each return tau, with a 95%
    stratified-bootstrap band; one panel per environment. Returns notes on runs left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    finished, left_out = finished_runs(groups)
    notes = [f"{Path(entry['run']).name}: {entry['status']}, left out" for entry in left_out]
    panels = by_env({name: runs for name, runs in finished.items() if runs})
    figure, axes = _figure(plt, list(panels), title, "no completed runs yet")
    for ax, (env_id, panel) in zip(axes.flat, panels.items()):
        scores, missing, _ = metric_scores(panel, "eval", None)
        notes += missing
        scores = {f"{name} (n={values.size})": values for name, values in scores.items() if values.size}
        low, high = (min(values.min() for values in scores.values()), max(values.max() for values in scores.values())) if scores else (0.0, 1.0)
        taus = np.linspace(low - 0.05 * (high - low or 1), high + 0.05 * (high - low or 1), 101)  # every step of the profile shows
        profiles, bands = stats.performance_profile(scores, taus)
        plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=bands, ax=ax, xlabel=r"final evaluation return $\tau$",
                                             ylabel=r"fraction of runs with return $> \tau$", labelsize="medium", ticklabelsize="medium")
        ax.set_title(env_id if len(panels) > 1 else "")
        ax.legend()
    _save(plt, figure, axes, len(panels), output)
    return notes


def _draw_group(ax: Any, label: str, curves: list[tuple[np.ndarray, np.ndarray]], x: str) -> list[str]:
    grid, values = on_grid(curves)
    mean, low, high = stats.mean_band(values)
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
    """Per group: final evaluation return across completed runs, the env steps and seconds
    until the mean of the last 20 training episodes first reached `threshold`, and the median
    CPU-seconds of a completed run."""
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
            "final_iqm": stats.iqm(finals) if finals else None,
            "reached": len(reached),
            "steps_to_threshold": float(np.median([steps for steps, _ in reached])) if reached else None,
            "seconds_to_threshold": float(np.median([seconds for _, seconds in reached])) if reached else None,
            "cpu_seconds": cpu_seconds([run for run in runs if run.status == "completed"]),
        })
    return rows


def cpu_seconds(runs: list[Run]) -> float | None:
    """Median process CPU time of the runs that recorded it (summary.json `cpu_seconds`)."""
    seconds = [run.summary["cpu_seconds"] for run in runs if _is_number(run.summary.get("cpu_seconds"))]
    return float(np.median(seconds)) if seconds else None


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
    """When the sweep's environment counts as solved (rlrun.config.solved_return): its runs'
    env.solved_return, else (runs saved before that key, or null) Gymnasium's reward threshold."""
    env_ids = {run.info.get("env.id") for run in runs} - {None}
    configured = {run.info.get("env.solved_return") for run in runs}
    if len(env_ids) != 1 or len(configured) != 1:
        return None
    return solved_return(env_ids.pop(), configured.pop())


# Comparing groups: `rlrun compare`.

METRICS = {
    "eval": "final evaluation return (deterministic episodes at the end of each run)",
    "recent": "final training return (mean of each run's last 20 training episodes)",
    "auc": "area under the learning curve: mean training return over the first {end:,.0f} env steps",
    "steps": "env steps until the last 20 training episodes first averaged {threshold:g}",
    "seconds": "seconds until the last 20 training episodes first averaged {threshold:g}",
}
LOWER_IS_BETTER = ("steps", "seconds")
REFERENCE_FILE = "reference_returns.yaml"


def check_envs(groups: dict[str, list[Run]], force: bool) -> dict[str, list[str]]:
    """Each group's environment ids; refuses groups of different (or mixed) environments
    unless `force`, since returns of different tasks are not on one scale."""
    # a job not started yet has no resolved config: no env to hold against the others
    envs = {name: sorted({str(run.info["env.id"]) for run in runs if "env.id" in run.info}) or ["?"] for name, runs in groups.items()}
    if not force and len({env for ids in envs.values() for env in ids} - {"?"}) > 1:
        listed = "; ".join(f"{name}: {', '.join(ids)}" for name, ids in envs.items())
        raise RLRunError(
            f"The groups are not all of one environment ({listed}): returns of different tasks do not compare. "
            "Compare within one environment (--by env.id separates them), or pass --force to compare anyway."
        )
    return envs


def finished_runs(groups: dict[str, list[Run]]) -> tuple[dict[str, list[Run]], list[dict[str, Any]]]:
    """The completed runs of each group, and every other run (running, failed, dead,
    interrupted) as left out, with its status and error."""
    finished = {name: [run for run in runs if run.status == "completed"] for name, runs in groups.items()}
    left_out = [
        {"group": name, "run": str(run.path), "status": run.status, "error": run.summary.get("error")}
        for name, runs in groups.items() for run in runs if run.status != "completed"
    ]
    return finished, left_out


def metric_scores(finished: dict[str, list[Run]], metric: str, threshold: float | None) -> tuple[dict[str, np.ndarray], list[str], str]:
    """One score per run for `metric`, the notes on runs without one or counted at a bound,
    and what the metric measures in words."""
    if metric not in METRICS:
        raise RLRunError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}.")
    if metric in LOWER_IS_BETTER and threshold is None:
        raise RLRunError(f"--metric {metric} needs --threshold R: the environment has no solved return (env.solved_return, or Gymnasium's reward threshold).")
    end = _common_end(finished) if metric == "auc" else None
    scores, notes = {}, []
    for name, runs in finished.items():
        values = {run: _score(run, metric, threshold, end) for run in runs}
        notes += [f"{name}: {run.path.name} has no {metric} value (nothing logged), left out" for run, value in values.items() if value is None]
        scores[name] = np.array([value[0] for value in values.values() if value is not None], dtype=float)
        bounded = sum(1 for value in values.values() if value is not None and value[1])
        if bounded:
            notes.append(f"{name}: {bounded} of {len(runs)} runs never reached {threshold:g}; counted at their end (a lower bound)")
    return scores, notes, METRICS[metric].format(end=end or 0, threshold=threshold or 0)


def _common_end(finished: dict[str, list[Run]]) -> float:
    # Runs of different budgets are compared over the steps they all trained.
    ends = [xs[-1] for runs in finished.values() for run in runs if (xs := run.curve(RETURN_TAG)[0]).size]
    return min(ends) if ends else 0.0


def _score(run: Run, metric: str, threshold: float | None, end: float | None) -> tuple[float, bool] | None:
    """(score, whether it is only a bound) of one finished run; None if it has none."""
    if metric in ("eval", "recent"):
        value = run.summary.get("eval_return_mean" if metric == "eval" else "train_return_recent")
        return (float(value), False) if _is_number(value) else None
    if metric == "auc":
        x, y = run.curve(RETURN_TAG)
        return (float(np.interp(np.linspace(0, end, 200), x, y).mean()), False) if x.size and end else None
    x, y = run.curve(RECENT_RETURN_TAG, metric)
    if not x.size:
        return None
    reached = first_reaching(x, y, threshold)
    return (reached, False) if reached is not None else (float(x[-1]), True)


def compare_groups(groups: dict[str, list[Run]], metric: str = "eval", threshold: float | None = None,
                   resamples: int = stats.RESAMPLES, force: bool = False, reference: str | None = None) -> dict[str, Any]:
    """Everything `rlrun compare` reports, as plain data (its --json): per group n, mean,
    median, IQM with 95% CIs and CPU-seconds; per pair of groups the probability of
    improvement, Welch and Mann-Whitney p-values (Holm-adjusted over the pairs), Cohen's d,
    the seeds per group for 80% power, and a verdict in words; with `reference`, each group
    beside that source's published return."""
    envs = check_envs(groups, force)
    published = reference_table(reference, metric) if reference else None
    if len(groups) < 2 and published is None:
        keys = swept_keys([run for runs in groups.values() for run in runs])
        raise RLRunError(
            f"Only one group ({', '.join(groups)}): nothing to compare it with. Pass two sweeps (or groups of runs), "
            f"or --by a key the runs differ in ({', '.join(keys) or 'none here'}); --reference places one group beside published numbers."
        )
    finished, left_out = finished_runs(groups)
    scores, notes, measure = metric_scores(finished, metric, threshold)
    rows = [
        {"group": name, "env": ", ".join(envs[name]), "runs": len(groups[name]), **stats.describe(scores[name], resamples), "cpu_seconds": cpu_seconds(finished[name])}
        for name in groups
    ]
    notes += [f"{row['group']}: {row['n']} finished run{'s' * (row['n'] != 1)}, fewer than the 2 a test needs" for row in rows if row["n"] < 2]
    return {
        "metric": metric, "measure": measure, "higher_is_better": metric not in LOWER_IS_BETTER, "threshold": threshold,
        "confidence": stats.CONFIDENCE, "resamples": resamples, "alpha": stats.ALPHA, "power": stats.POWER,
        "groups": rows, "pairs": compare_pairs(scores, metric not in LOWER_IS_BETTER, resamples), "left_out": left_out, "notes": notes,
        "reference": reference_rows(finished, rows, published) if published else None,
    }


def compare_pairs(scores: dict[str, np.ndarray], higher_is_better: bool = True, resamples: int = stats.RESAMPLES) -> list[dict[str, Any]]:
    """Every pair of groups, better mean first, tested; p-values Holm-adjusted over the pairs."""
    import itertools

    sign = 1.0 if higher_is_better else -1.0
    pairs = []
    for a, b in itertools.combinations(scores, 2):
        if scores[a].size and scores[b].size and sign * (scores[b].mean() - scores[a].mean()) > 0:
            a, b = b, a
        pairs.append(_pair(a, b, sign * scores[a], sign * scores[b], resamples))
    for test in ("welch", "mann_whitney"):
        for pair, adjusted in zip(pairs, stats.holm([pair[f"p_{test}"] for pair in pairs])):
            pair[f"p_{test}_holm"] = adjusted
    for pair in pairs:
        pair["significant"] = pair["tested"] and _p(pair) is not None and _p(pair) < stats.ALPHA
        pair["verdict"] = verdict(pair)
    return pairs


def _pair(a: str, b: str, x: np.ndarray, y: np.ndarray, resamples: int) -> dict[str, Any]:
    """A against B, scores oriented so that higher is better."""
    pair: dict[str, Any] = {"a": a, "b": b, "n_a": int(x.size), "n_b": int(y.size), "tested": x.size >= 2 and y.size >= 2}
    if not pair["tested"]:
        return pair | {"p_welch": None, "p_mann_whitney": None, "probability_of_improvement": None, "probability_of_improvement_ci": None, "cohens_d": None, "seeds_for_power": None}
    poi, poi_ci = stats.probability_of_improvement(x, y, resamples)
    tests = stats.tests(x, y)
    d = stats.cohens_d(x, y)
    return pair | {
        "p_welch": tests["welch"], "p_mann_whitney": tests["mann_whitney"], "probability_of_improvement": poi,
        "probability_of_improvement_ci": poi_ci, "cohens_d": d if math.isfinite(d) else None, "seeds_for_power": stats.seeds_for_power(d),
    }


def _p(pair: dict[str, Any]) -> float | None:
    """The p-value a verdict rests on: Welch's, Holm-adjusted; Mann-Whitney's where Welch's
    is undefined (neither group varies)."""
    return pair["p_welch_holm"] if pair["p_welch_holm"] is not None else pair["p_mann_whitney_holm"]


def verdict(pair: dict[str, Any]) -> str:
    a, b = pair["a"], pair["b"]
    if not pair["tested"]:
        short = [f"{name} has {n} finished run{'s' * (n != 1)}" for name, n in ((a, pair["n_a"]), (b, pair["n_b"])) if n < 2]
        return f"{a} vs {b}: not tested: {' and '.join(short)}; a test needs at least 2 per group."
    p, poi = _p(pair), pair["probability_of_improvement"]
    numbers = f"p = {p:.3g}, P({a}>{b}) = {poi:.2f}"
    if pair["significant"]:
        return f"{a} is better than {b} ({numbers}).{_disagreement(pair)}"
    seeds = pair["n_a"] if pair["n_a"] == pair["n_b"] else f"{pair['n_a']} and {pair['n_b']}"
    needed = pair["seeds_for_power"]
    more = "the observed difference is zero" if pair["cohens_d"] == 0 else (
        f"about {needed:,} seeds per group would be needed to detect the observed difference with {stats.POWER:.0%} power" if needed else "")
    return f"No significant difference between {a} and {b} with {seeds} seeds ({numbers}){'; ' + more if more else ''}.{_disagreement(pair)}"


def _disagreement(pair: dict[str, Any]) -> str:
    welch, mann_whitney = pair["p_welch_holm"], pair["p_mann_whitney_holm"]
    if welch is None or (mann_whitney < stats.ALPHA) == (welch < stats.ALPHA):
        return ""
    if mann_whitney < stats.ALPHA:
        return f" (Mann-Whitney U alone finds a difference: p = {mann_whitney:.3g}.)"
    return f" (Mann-Whitney U does not confirm it: p = {mann_whitney:.3g}.)"


def references() -> dict[str, Any]:
    """The published PPO returns shipped with rlrun (reference_returns.yaml), by source."""
    from importlib.resources import files

    return yaml.safe_load(files("rlrun").joinpath(REFERENCE_FILE).read_text())


def reference_table(source: str, metric: str) -> dict[str, Any]:
    """One source's published returns, refused for a metric that is not a final return."""
    published = references()
    if source not in published:
        raise RLRunError(f"--reference must be one of {', '.join(published)}, got {source!r}.")
    if metric not in ("eval", "recent"):
        raise RLRunError(f"--reference places final returns beside published ones: use --metric eval or recent, not {metric}.")
    return published[source] | {"key": source}


def reference_rows(finished: dict[str, list[Run]], rows: list[dict[str, Any]], table: dict[str, Any]) -> dict[str, Any]:
    """Each group beside the published mean and spread for its environment, with what differs:
    the env version, the algorithm, the training budget."""
    return {key: table[key] for key in ("key", "name", "source", "measure", "spread")} | {
        "rows": [_beside(row, finished[row["group"]], table["results"]) for row in rows],
    }


def task_and_version(env_id: str) -> tuple[str, str | None]:
    name, _, version = env_id.rpartition("-v")
    return (name, version) if name and version.isdigit() else (env_id, None)


def _beside(row: dict[str, Any], runs: list[Run], results: list[dict[str, Any]]) -> dict[str, Any]:
    env = row["env"]
    match = next((entry for entry in results if task_and_version(entry["env"])[0] == task_and_version(env)[0]), None)
    steps = float(np.median([run.summary["env_steps"] for run in runs if _is_number(run.summary.get("env_steps"))] or [np.nan]))
    beside = {"group": row["group"], "env": env, "n": row["n"], "mean": row["mean"], "mean_ci": row["mean_ci"], "env_steps": None if math.isnan(steps) else steps}
    if match is None:
        return beside | {"published": None, "position": None, "notes": [f"no published number for {task_and_version(env)[0]}"]}
    notes = [f"env version differs: {env} here, {match['env']} published"] if match["env"] != env else []
    algos = sorted({str(run.info.get("algo")) for run in runs})
    if algos != ["ppo_clip"]:
        notes.append(f"algo {', '.join(algos) or '-'} here, PPO published")
    if not math.isnan(steps) and abs(steps - match["steps"]) > 0.1 * match["steps"]:
        notes.append(f"{steps:,.0f} env steps here, {match['steps']:,} published")
    return beside | {"published": match, "position": _position(row["mean_ci"], match["mean"]), "notes": notes}


def _position(ci: list[float] | None, published: float) -> str | None:
    """Where the published mean lies relative to the group's 95% CI of its mean."""
    if ci is None:
        return None
    return "below published" if ci[1] < published else "above published" if ci[0] > published else "published mean within CI"


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None: JSON has no NaN or infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
