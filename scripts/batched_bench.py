"""Batched sweeps against the same sweeps as separate processes: wall time, throughput, peak
memory and final returns. Writes the tables into docs/benchmarks.md.

    python scripts/batched_bench.py                    # every workload: about 15 minutes on 2 cores
    python scripts/batched_bench.py --only cartpole16

Workloads (default hyperparameters of each env's preset, one torch thread per process):
- cartpole16: CartPole-v1, 16 seeds. The batched launcher against 16 separate `rlrun train`
  processes one after another, and against Hydra's joblib launcher with 2 jobs.
- cartpole32: 32 seeds batched against the whole process of one run.
- hopper8: Hopper-v5, 8 seeds, a shortened budget: aggregate env steps/s of the batched
  launcher against joblib with 2 jobs, and the final returns of both.
Every figure is the median of `--repeats` runs (Hopper: one), the runners alternating; peak RSS is the
largest resident set of any one process of the sweep (the batched group's own process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import write_section

SOLVED = 475.0
HOPPER_BUDGET = 102_400  # 50 updates of the MuJoCo preset: enough for throughput and an early-return comparison
HOPPER_REPEATS = 1  # a repeat takes about 5 minutes


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds of `command`, and the peak resident MB of the largest process of its tree
    (wait4 reports the maximum over the child and the descendants it waited for)."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if status != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed: {stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def rlrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlrun", "train", *args]


def summaries(root: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(root.rglob("summary.json"))]


def sweep(root: Path, seeds: range, launcher: list[str], *overrides: str) -> dict:
    seconds, rss = timed(rlrun("-m", f"seed={','.join(map(str, seeds))}", *launcher, f"hydra.sweep.dir={root}", *overrides))
    runs = summaries(root)
    assert len(runs) == len(seeds), f"{len(runs)} summaries for {len(seeds)} seeds in {root}"
    return {"seconds": seconds, "rss": rss, "runs": runs}


def separate(root: Path, seeds: range, *overrides: str) -> dict:
    start = time.perf_counter()
    for seed in seeds:
        timed(rlrun(f"seed={seed}", f"hydra.run.dir={root / str(seed)}", *overrides))
    return {"seconds": time.perf_counter() - start, "runs": summaries(root)}


BATCHED = ["hydra/launcher=batched"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def solved(result: dict) -> int:
    return sum(run["eval_return_mean"] is not None and run["eval_return_mean"] >= SOLVED for run in result["runs"])


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(result[key] for result in results)


def cartpole16(tmp: Path, repeats: int) -> list[str]:
    seeds = range(1, 17)
    batched, sequential, joblib = [], [], []
    for repeat in range(repeats):
        batched.append(sweep(tmp / f"b16_{repeat}", seeds, BATCHED))
        sequential.append(separate(tmp / f"s16_{repeat}", seeds))
        joblib.append(sweep(tmp / f"j16_{repeat}", seeds, JOBLIB))
    b, s, j = (median_of(results, "seconds") for results in (batched, sequential, joblib))
    return [
        "### CartPole-v1, 16 seeds (default preset, 50k env steps each)",
        "",
        "| runner | whole sweep, wall s (median) | batched is faster by | seeds with final eval >= 475 (each repeat) | peak RSS MB |",
        "|---|---|---|---|---|",
        f"| batched launcher (`{' '.join(BATCHED)}`) | {b:.1f} | | {', '.join(f'{solved(r)}/16' for r in batched)} | {median_of(batched, 'rss'):.0f} |",
        f"| 16 separate `rlrun train` processes, one after another | {s:.1f} | {s / b:.1f}x | {', '.join(f'{solved(r)}/16' for r in sequential)} | |",
        f"| joblib launcher, 2 jobs (`{' '.join(JOBLIB)}`) | {j:.1f} | {j / b:.1f}x | {', '.join(f'{solved(r)}/16' for r in joblib)} | {median_of(joblib, 'rss'):.0f} |",
        "",
    ]


def cartpole32(tmp: Path, repeats: int) -> list[str]:
    batched, single = [], []
    for repeat in range(repeats):
        batched.append(sweep(tmp / f"b32_{repeat}", range(1, 33), BATCHED))
        single.append(separate(tmp / f"one_{repeat}", range(1, 2)))
    b, one = median_of(batched, "seconds"), median_of(single, "seconds")
    return [
        "### CartPole-v1, 32 seeds against one run (default preset)",
        "",
        "| runner | wall s (median) | ratio to one run | seeds with final eval >= 475 (each repeat) | peak RSS MB |",
        "|---|---|---|---|---|",
        f"| one `rlrun train seed=1` process | {one:.1f} | 1.0x | | |",
        f"| 32 seeds, batched launcher | {b:.1f} | {b / one:.1f}x | {', '.join(f'{solved(r)}/32' for r in batched)} | {median_of(batched, 'rss'):.0f} |",
        "",
    ]


def hopper8(tmp: Path, repeats: int) -> list[str]:
    seeds, budget = range(1, 9), [f"total_timesteps={HOPPER_BUDGET}", "env=Hopper-v5"]
    batched, joblib = [], []
    for repeat in range(min(repeats, HOPPER_REPEATS)):
        batched.append(sweep(tmp / f"bh_{repeat}", seeds, BATCHED, *budget))
        joblib.append(sweep(tmp / f"jh_{repeat}", seeds, JOBLIB, *budget))

    def aggregate(result: dict) -> float:
        return sum(run["env_steps"] for run in result["runs"]) / result["seconds"]

    def finals(result: dict) -> str:
        values = sorted(run["eval_return_mean"] for run in result["runs"])
        return f"median {statistics.median(values):.0f}, range {values[0]:.0f} to {values[-1]:.0f}"

    b, j = statistics.median(map(aggregate, batched)), statistics.median(map(aggregate, joblib))
    return [
        f"### Hopper-v5, 8 seeds (MuJoCo preset, {HOPPER_BUDGET:,} env steps each)",
        "",
        "| runner | aggregate env steps/s, whole sweep (median) | ratio | final eval returns (first repeat) | peak RSS MB |",
        "|---|---|---|---|---|",
        f"| batched launcher | {b:,.0f} | {b / j:.2f}x | {finals(batched[0])} | {median_of(batched, 'rss'):.0f} |",
        f"| joblib launcher, 2 jobs | {j:,.0f} | 1.00x | {finals(joblib[0])} | {median_of(joblib, 'rss'):.0f} |",
        "",
    ]


WORKLOADS = {"cartpole16": cartpole16, "cartpole32": cartpole32, "hopper8": hopper8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            lines = WORKLOADS[name](Path(tmp), args.repeats)
            lines[1:1] = [
                "",
                f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, CPU only. "
                f"Produced by `python scripts/batched_bench.py --only {name} --repeats {args.repeats}`; every process "
                "runs with torch_threads=1, the batched launcher with its defaults.",
            ]
            print(write_section(f"batched-{name}", lines))


if __name__ == "__main__":
    main()
