"""Statistics for comparing groups of runs, taken from the field's libraries rather than
written here: rliable (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice",
NeurIPS 2021) for the interquartile mean, stratified-bootstrap confidence intervals,
probability of improvement and performance profiles; scipy.stats for Welch's t-test and the
Mann-Whitney U test; statsmodels for Holm's correction and the power of the t-test.

They are the `stats` extra (`pip install 'rlrun[stats]'`, also in `plot` and `sweeps`):
rliable brings pandas, arch, statsmodels and seaborn, too heavy for a training install.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from rlrun.errors import RLRunError

CONFIDENCE = 0.95
RESAMPLES = 2000  # rliable's own default for profiles; enough for 95% percentile intervals
POWER = 0.8
ALPHA = 0.05


def rliable() -> tuple[Any, Any]:
    """rliable's `library` and `metrics` modules, or a one-paragraph error naming the extra."""
    try:
        from rliable import library, metrics
    except ImportError as err:
        raise RLRunError(f"This needs rliable and its statistics stack ({err}): pip install 'rlrun[stats]'.") from None
    return library, metrics


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean (25% trimmed from each end), rliable's aggregate."""
    return float(rliable()[1].aggregate_iqm(np.asarray(scores, dtype=float)))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # rliable's stratified bootstrap draws its indices from numpy's global generator: seed it
    # for reproducible intervals, and give the caller's state back.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def intervals(scores: Any, func: Callable[..., np.ndarray], resamples: int = RESAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """rliable's point estimates and 95% stratified-bootstrap (percentile) intervals of
    `func`: (point, (2, k) lower and upper). `scores`: an array (runs, tasks, ...) or a list
    of them, resampled independently (probability of improvement)."""
    library = rliable()[0]
    with _seeded(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # resamples of tied scores
        points, cis = library.get_interval_estimates({"x": scores}, func, reps=resamples, confidence_interval_size=CONFIDENCE)
    return np.asarray(points["x"], dtype=float), np.asarray(cis["x"], dtype=float)


def _aggregates(scores: np.ndarray) -> np.ndarray:
    metrics = rliable()[1]
    # rliable's aggregate_median is a median over tasks of per-task means; with one task
    # that is the mean, so the median over runs is numpy's.
    return np.array([metrics.aggregate_mean(scores), np.median(scores), metrics.aggregate_iqm(scores)])


def describe(scores: np.ndarray, resamples: int = RESAMPLES) -> dict[str, Any]:
    """n, mean, median, IQM (each with a 95% CI when there are 2+ runs) and std of one
    group's scores, one per run."""
    scores = np.asarray(scores, dtype=float)
    row: dict[str, Any] = {"n": int(scores.size)}
    if scores.size == 0:
        return row | {name: None for name in ("mean", "median", "iqm", "std")} | {f"{name}_ci": None for name in ("mean", "median", "iqm")}
    if scores.size == 1:
        points, cis = _aggregates(scores[:, None]), None
    else:
        points, cis = intervals(scores[:, None], _aggregates, resamples)
    for i, name in enumerate(("mean", "median", "iqm")):
        row[name] = float(points[i])
        row[f"{name}_ci"] = None if cis is None else [float(cis[0, i]), float(cis[1, i])]
    return row | {"std": float(np.std(scores, ddof=1)) if scores.size > 1 else None}


def probability_of_improvement(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES) -> tuple[float, list[float]]:
    """P(a run of A scores higher than a run of B), ties counting half (rliable's, from the
    Mann-Whitney U statistic), with its 95% CI, A and B resampled independently."""
    metrics = rliable()[1]
    point, ci = intervals([np.asarray(a, float)[:, None], np.asarray(b, float)[:, None]], lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), resamples)
    return float(point[0]), [float(ci[0, 0]), float(ci[1, 0])]


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """(mean A - mean B) / pooled std: the effect size the t-test's power is a function of."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = math.sqrt(((a.size - 1) * np.var(a, ddof=1) + (b.size - 1) * np.var(b, ddof=1)) / (a.size + b.size - 2))
    difference = float(a.mean() - b.mean())
    if pooled == 0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return difference / pooled


def tests(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Two-sided p-values of Welch's t-test and the Mann-Whitney U test (scipy.stats). Welch's
    is undefined when neither group varies (every run the same score)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one group constant: scipy warns, the test holds
        welch = None if np.ptp(a) == 0 and np.ptp(b) == 0 else float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return {"welch": welch, "mann_whitney": float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels) over the tests that were run; None stays None."""
    from statsmodels.stats.multitest import multipletests

    present = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    if len(present) == 1:
        return list(pvalues)  # nothing to adjust for; statsmodels' Holm ends in a full gc.collect()
    if present:
        for i, p in zip(present, multipletests([pvalues[i] for i in present], method="holm")[1]):
            adjusted[i] = float(p)
    return adjusted


def seeds_for_power(effect_size: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Runs per group for a two-sided two-sample t-test to detect `effect_size` (Cohen's d)
    with probability `power` (statsmodels' TTestIndPower); None when no number would (d = 0)
    or the effect is degenerate (no variance)."""
    from statsmodels.stats.power import TTestIndPower

    d = abs(effect_size)
    if d == 0 or not math.isfinite(d):
        return None
    analysis = TTestIndPower()
    smallest = analysis.power(effect_size=d, nobs1=2, alpha=alpha, ratio=1.0)
    if not smallest < power:  # NaN: the noncentral t underflows for effects far beyond any threshold
        return 2  # the solver cannot go below the smallest sample a t-test has
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: a nan result says the same
        n = analysis.solve_power(effect_size=d, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    n = float(np.asarray(n).squeeze())
    return math.ceil(n) if math.isfinite(n) else None


def performance_profile(scores: dict[str, np.ndarray], taus: np.ndarray, resamples: int = RESAMPLES) -> tuple[dict, dict]:
    """rliable's score distributions: per group, the fraction of runs scoring above each tau,
    with 95% stratified-bootstrap bands."""
    library = rliable()[0]
    with _seeded(0):
        return library.create_performance_profile(
            {name: np.asarray(s, float)[:, None] for name, s in scores.items()}, taus, reps=resamples,
            # rliable's score distribution (fraction of runs above tau), vectorised over tau: its
            # default calls numpy once per tau per resample, a hundred times slower
            custom_profile_func=lambda runs, tau: np.mean(runs[..., None] > tau, axis=(0, 1)),
        )


def mean_band(values: np.ndarray, resamples: int = RESAMPLES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) of curves on a common grid, NaN where a run has no data, and a
    pointwise 95% stratified-bootstrap band (rliable) over the runs present at each point."""
    mean, low, high = (np.full(values.shape[1], np.nan) for _ in range(3))
    present = ~np.isnan(values)
    starts = np.flatnonzero(np.r_[True, (present[:, 1:] != present[:, :-1]).any(axis=0)])
    for start, stop in zip(starts, np.r_[starts[1:], values.shape[1]]):
        # the same runs have data across [start, stop): bootstrap those runs only
        rows = values[present[:, start]][:, start:stop]
        if rows.shape[0] == 0:
            continue
        mean[start:stop] = rows.mean(axis=0)
        if rows.shape[0] == 1:
            low[start:stop] = high[start:stop] = rows[0]
            continue
        _, ci = intervals(rows, lambda x: x.mean(axis=0), resamples)
        low[start:stop], high[start:stop] = ci
    return mean, low, high
