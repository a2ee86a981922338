"""Ladder benchmark: every registered algorithm, in ladder order, several seeds, on CartPole-v1
and Acrobot-v1, each a real `rlrun train -m` sweep. Writes a table into docs/benchmarks.md.

    python scripts/ladder.py                       # seeds 1,2,3, one job at a time
    python scripts/ladder.py --jobs 2              # two jobs at a time (Hydra's joblib launcher)
    python scripts/ladder.py --seeds 1 --envs CartPole-v1
    python scripts/ladder.py --algos ppo_kl --set algo.beta_min=1e-30 algo.beta_max=1e30 --print-only

`--algos` and `--set` run a variant (a subset, extra overrides for every run); with
`--print-only` its rows are printed and docs/benchmarks.md is left as it is.

Every algorithm trains for the same budget (BUDGETS, which overrides a preset's), with its
preset's other settings where `configs/tuned/` has one for the pair (pg and a2c on CartPole-v1
change lr and advantages; the table at the time of writing predates those presets);
`--set '~tuned'` runs every algorithm on its own defaults instead.

"Steps to threshold" is the first env step at which the mean return of the last 20 training
episodes (`rollout/recent_return`) reaches the environment's Gymnasium reward threshold
(CartPole-v1 475, Acrobot-v1 -100); "final eval" is the mean return of 10 deterministic
episodes at the end (mean and standard deviation across seeds).
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
from pathlib import Path

import gymnasium as gym
from benchdoc import write_section
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun.algos import ALGORITHMS

BUDGETS = {"CartPole-v1": 50_000, "Acrobot-v1": 100_000}
# Ladder order, each rung adding one idea to the one before: whole-episode policy gradient, a
# baseline, A2C's critic on short rollouts with one gradient step per batch (not in the
# tutorial: between its eq. 13 and PPO), then PPO's reuse of a batch for several epochs, kept
# near pi_old by a KL penalty, then by clipping. An algorithm missing here runs last, by name.
RUNGS = ("pg", "pg_baseline", "a2c", "ppo_kl", "ppo_clip")


def ladder_order() -> list[str]:
    """The registry's algorithms sorted by rung."""
    return sorted(ALGORITHMS, key=lambda name: (RUNGS.index(name) if name in RUNGS else len(RUNGS), name))


def sweep(env_id: str, algos: list[str], seeds: str, jobs: int, extra: list[str], sweep_dir: Path) -> str:
    command = [
        "rlrun", "train", "-m", f"algo={','.join(algos)}", f"seed={seeds}", f"env={env_id}",
        f"total_timesteps={BUDGETS[env_id]}", *extra,
    ]
    if jobs > 1:
        command += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    subprocess.run([sys.executable, "-m", *command, f"hydra.sweep.dir={sweep_dir}"], check=True)  # this interpreter's rlrun
    return " ".join(command)


def steps_to_threshold(run_dir: Path, threshold: float) -> int | None:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    for event in events.Scalars("rollout/recent_return"):
        if event.value >= threshold:
            return event.step
    return None


def table_rows(env_id: str, algos: list[str], sweep_dir: Path) -> list[str]:
    threshold = gym.spec(env_id).reward_threshold
    # A job's directory names only the swept keys, so each run's algorithm is read from its summary.
    by_run = {path.parent: json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/summary.json"))}
    rows = []
    for algo in algos:
        runs = [run for run, summary in by_run.items() if summary["algo"] == algo]
        summaries = [by_run[run] for run in runs]
        finals = [s["eval_return_mean"] for s in summaries]
        reached = [steps_to_threshold(run, threshold) for run in runs]
        reached_steps = [r for r in reached if r is not None]
        steps_text = (
            f"{statistics.median(reached_steps):,.0f} ({len(reached_steps)}/{len(runs)} reached)"
            if reached_steps else f"not reached (0/{len(runs)})"
        )
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        seconds = statistics.median(s["wall_seconds"] for s in summaries)
        rows.append(
            f"| {env_id} | {algo} | {statistics.mean(finals):.1f} ± {spread:.1f} | "
            f"{steps_text} | {summaries[0]['env_steps']:,} | {seconds:.1f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--envs", default=",".join(BUDGETS))
    parser.add_argument("--algos", default=None, help="comma-separated subset (default: every registered algorithm)")
    parser.add_argument("--set", dest="extra", nargs="*", default=[], metavar="KEY=VALUE", help="extra overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="jobs at a time; above 1, Hydra's joblib launcher")
    parser.add_argument("--print-only", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    algos = ladder_order()
    if args.algos:
        chosen = args.algos.split(",")
        unknown = sorted(set(chosen) - set(algos))
        if unknown:
            parser.error(f"unknown algorithm(s) {', '.join(unknown)}; registered: {', '.join(algos)}")
        algos = [name for name in algos if name in chosen]
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs.split(","):
            sweep_dir = Path(tmp) / env_id
            commands.append(sweep(env_id, algos, args.seeds, args.jobs, args.extra, sweep_dir))
            rows += table_rows(env_id, algos, sweep_dir)
    invocation = f"python scripts/ladder.py --seeds {args.seeds} --envs {args.envs}"
    invocation += f" --algos {','.join(algos)}" if args.algos else ""
    invocation += f" --set {' '.join(args.extra)}" if args.extra else ""
    invocation += f" --jobs {args.jobs}" if args.jobs > 1 else ""
    sharing = f"{args.jobs} jobs at a time (wall seconds are per run, under that sharing)" if args.jobs > 1 else "one job at a time"
    lines = [
        "## Algorithm ladder",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, CPU only, {sharing}. "
        f"Seeds {args.seeds}; produced by `{invocation}`, which runs:",
        "",
        *[f"    {command}" for command in commands],
        "",
        "| env | algo | final eval return (mean ± sd over seeds) | env steps to threshold (median) | env steps | wall s (median) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines) if args.print_only else write_section("ladder", lines))


if __name__ == "__main__":
    main()
