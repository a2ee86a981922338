"""PPO-clip at its tuned settings (1M env steps) on LunarLander-v3, HalfCheetah-v5 and
Hopper-v5, several seeds, two jobs at a time through Hydra's joblib launcher. Writes a table
into docs/benchmarks.md next to published reference numbers.

    python scripts/beyond_cartpole.py                      # seeds 1,2,3: about an hour on a 2-core machine
    python scripts/beyond_cartpole.py --envs Hopper-v5 --seeds 1

Needs `pip install -e '.[box2d,mujoco,joblib]'`. Each job runs with torch_threads=1; with two
jobs sharing the machine's cores, wall seconds and SPS are per job, under that sharing.
"""

from __future__ import annotations

import argparse
import os
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchdoc import write_section

TARGETS = {"LunarLander-v3": 200, "HalfCheetah-v5": 1500, "Hopper-v5": 2000}
# Published PPO results at about 1M steps, for orientation only: other environment versions,
# hyperparameters and evaluation protocols (see the notes under the table).
REFERENCES = {
    "LunarLander-v3": "242 ± 32 (SB3 rl-zoo, LunarLander-v2)",
    "HalfCheetah-v5": "1443 ± 46 (CleanRL, v4); 5819 ± 664 (SB3 rl-zoo, v3); ~1800 (PPO paper, v1)",
    "Hopper-v5": "2383 ± 272 (CleanRL, v4); 2410 ± 10 (SB3 rl-zoo, v3); ~2200 (PPO paper, v1)",
}
NOTES = """Sources of the published numbers: CleanRL `ppo_continuous_action.py` MuJoCo v4 table,
https://docs.cleanrl.dev/rl-algorithms/ppo/ (average training episodic return at 1M steps,
default hyperparameters, which rlrun's MuJoCo presets follow); rl-baselines3-zoo
`benchmark.md` (DLR-RM/rl-baselines3-zoo; one tuned agent per row, deterministic evaluation,
± across evaluation episodes); PPO paper (Schulman et al. 2017) Fig. 3 as read off the plot
in sony/nnabla-rl `reproductions/algorithms/mujoco/ppo/README.md` (approximate)."""


def sweep(env_id: str, seeds: str, jobs: int, sweep_dir: Path) -> str:
    command = [
        "rlrun", "train", "-m", "algo=ppo_clip", f"env={env_id}", f"seed={seeds}",
        "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={sweep_dir}",
    ]
    subprocess.run([sys.executable, "-m", *command], check=False)  # a failed seed still reports
    return " ".join(command[:-1])


def row(env_id: str, sweep_dir: Path) -> str:
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    done = [s for s in summaries if s["status"] == "completed"]
    finals = [s["eval_return_mean"] for s in done]
    spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
    per_seed = ", ".join(f"{s['seed']}: {s['eval_return_mean']:.0f}" for s in done)
    return (
        f"| {env_id} | {statistics.mean(finals):.0f} ± {spread:.0f} | {per_seed} | "
        f"{len(done)}/{len(summaries)} | {statistics.median(s['env_steps'] for s in done):,.0f} | "
        f"{statistics.median(s['wall_seconds'] for s in done):.0f} | {statistics.median(s['sps'] for s in done):,.0f} | "
        f"≥ {TARGETS[env_id]} | {REFERENCES[env_id]} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(TARGETS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs.split(","):
            commands.append(sweep(env_id, args.seeds, args.jobs, Path(tmp) / env_id))
            rows.append(row(env_id, Path(tmp) / env_id))
    section = write_section("beyond-cartpole", [
        "## Beyond CartPole: PPO-clip at 1M steps",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, CPU only, "
        f"{args.jobs} jobs at a time. Produced by `python scripts/beyond_cartpole.py --envs {args.envs} --seeds {args.seeds}`, which runs:",
        "",
        *[f"    {command}" for command in commands],
        "",
        "| env | final eval return (mean ± sd over seeds, 10 deterministic episodes each) | per seed | completed | env steps | wall s per run (median) | SPS per run (median) | target | published PPO |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        NOTES,
    ])
    print(section)


if __name__ == "__main__":
    main()
