"""Ladder benchmark: pg, pg_baseline, ppo_kl and ppo_clip, several seeds, on CartPole-v1 and
Acrobot-v1, each a real `rlrun train -m` sweep. Writes a table into docs/benchmarks.md.

    python scripts/ladder.py                       # seeds 1,2,3; about 15 min on 2 cores
    python scripts/ladder.py --seeds 1 --envs CartPole-v1

"Steps to threshold" is the first env step at which the mean return of the last 20 training
episodes (`rollout/recent_return`) reaches the environment's Gymnasium reward threshold
(CartPole-v1 475, Acrobot-v1 -100); "final eval" is the mean return of 10 deterministic
episodes at the end (mean and standard deviation across seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
from benchdoc import write_section
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ALGOS = ["pg", "pg_baseline", "ppo_kl", "ppo_clip"]
BUDGETS = {"CartPole-v1": 50_000, "Acrobot-v1": 100_000}


def sweep(env_id: str, seeds: str, sweep_dir: Path) -> str:
    command = [
        "rlrun", "train", "-m", f"algo={','.join(ALGOS)}", f"seed={seeds}", f"env={env_id}",
        f"total_timesteps={BUDGETS[env_id]}", f"hydra.sweep.dir={sweep_dir}",
    ]
    subprocess.run([sys.executable, "-m", *command], check=True)  # this interpreter's rlrun
    return " ".join(command[:-1])


def steps_to_threshold(run_dir: Path, threshold: float) -> int | None:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    for event in events.Scalars("rollout/recent_return"):
        if event.value >= threshold:
            return event.step
    return None


def table_rows(env_id: str, sweep_dir: Path) -> list[str]:
    threshold = gym.spec(env_id).reward_threshold
    rows = []
    for algo in ALGOS:
        runs = [p for p in sorted(sweep_dir.iterdir()) if f"algo={algo}," in p.name + ","]
        summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
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
    args = parser.parse_args()
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs.split(","):
            sweep_dir = Path(tmp) / env_id
            commands.append(sweep(env_id, args.seeds, sweep_dir))
            rows += table_rows(env_id, sweep_dir)
    section = write_section("ladder", [
        "## Algorithm ladder",
        "",
        f"Machine: {platform.machine()}, {platform.python_version()}, 2 cores, CPU only. "
        f"Seeds {args.seeds}; produced by `python scripts/ladder.py --seeds {args.seeds} --envs {args.envs}`, which runs:",
        "",
        *[f"    {command}" for command in commands],
        "",
        "| env | algo | final eval return (mean ± sd over seeds) | env steps to threshold (median) | env steps | wall s (median) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(section)


if __name__ == "__main__":
    main()
