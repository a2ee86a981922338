"""PPO-clip at its tuned settings (1M env steps) on LunarLander-v3 and the MuJoCo tasks, several
seeds, as one sweep through rlrun's batched launcher (or Hydra's joblib launcher). Writes a
table into docs/benchmarks.md next to published reference numbers: per env the mean ± sd and
the interquartile mean (IQM) with a 95% stratified-bootstrap interval (rliable), and each seed.

    python scripts/beyond_cartpole.py                      # seeds 1,2,3: about an hour on a 2-core machine
    python scripts/beyond_cartpole.py --envs Hopper-v5,Walker2d-v5,HalfCheetah-v5 --seeds 1,2,3,4,5 --section mujoco-1m
    python scripts/beyond_cartpole.py --envs Hopper-v5 --seeds 1 --launcher joblib

Needs `pip install -e '.[box2d,mujoco,joblib,stats]'`. Each process runs with torch_threads=1;
wall seconds and SPS are per run, under the sharing of the machine's cores (a batched group's
runs share one process).
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
import time
from pathlib import Path

from benchdoc import write_section

TARGETS = {"LunarLander-v3": 200, "HalfCheetah-v5": 1500, "Hopper-v5": 2000, "Walker2d-v5": 2000}
# Published PPO results at about 1M steps, for orientation only: other environment versions,
# hyperparameters and evaluation protocols (see the notes under the table).
REFERENCES = {
    "LunarLander-v3": "242 ± 32 (SB3 rl-zoo, LunarLander-v2)",
    "HalfCheetah-v5": "1443 ± 46 (CleanRL, v4); 5819 ± 664 (SB3 rl-zoo, v3); ~1800 (PPO paper, v1)",
    "Hopper-v5": "2383 ± 272 (CleanRL, v4); 2410 ± 10 (SB3 rl-zoo, v3); ~2200 (PPO paper, v1)",
    "Walker2d-v5": "2288 (CleanRL, v4)",
}
NOTES = """Sources of the published numbers: CleanRL `ppo_continuous_action.py` MuJoCo v4 table,
https://docs.cleanrl.dev/rl-algorithms/ppo/ (average training episodic return at 1M steps,
default hyperparameters, which rlrun's MuJoCo presets follow); rl-baselines3-zoo
`benchmark.md` (DLR-RM/rl-baselines3-zoo; one tuned agent per row, deterministic evaluation,
± across evaluation episodes); PPO paper (Schulman et al. 2017) Fig. 3 as read off the plot
in sony/nnabla-rl `reproductions/algorithms/mujoco/ppo/README.md` (approximate)."""


LAUNCHERS = {
    # max_group_size 3: the sweep's groups (one per env) are split so that both cores stay busy to the end.
    "batched": ["hydra/launcher=batched", "hydra.launcher.max_group_size=3"],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


def sweep(envs: str, seeds: str, launcher: str, sweep_dir: Path) -> str:
    command = ["rlrun", "train", "-m", "algo=ppo_clip", f"env={envs}", f"seed={seeds}", *LAUNCHERS[launcher], f"hydra.sweep.dir={sweep_dir}"]
    subprocess.run([sys.executable, "-m", *command], check=False)  # a failed seed still reports
    return " ".join(command[:-1])


def iqm_interval(finals: list[float]) -> tuple[float, float, float]:
    """Interquartile mean over seeds and its 95% stratified-bootstrap interval (rliable)."""
    import numpy as np
    from rliable import library, metrics

    scores = {"run": np.array(finals)[:, None]}  # (seeds, tasks)
    point, interval = library.get_interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=5000)
    return float(point["run"][0]), float(interval["run"][0, 0]), float(interval["run"][1, 0])


def row(env_id: str, sweep_dir: Path) -> str:
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    summaries = [s for s in summaries if s.get("env") == env_id]
    done = sorted((s for s in summaries if s["status"] == "completed"), key=lambda s: s["seed"])
    finals = [s["eval_return_mean"] for s in done]
    spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
    iqm, low, high = iqm_interval(finals)
    per_seed = ", ".join(f"{s['seed']}: {s['eval_return_mean']:.0f}" for s in done)
    return (
        f"| {env_id} | {statistics.mean(finals):.0f} ± {spread:.0f} | {iqm:.0f} [{low:.0f}, {high:.0f}] | {per_seed} | "
        f"{len(done)}/{len(summaries)} | {statistics.median(s['env_steps'] for s in done):,.0f} | "
        f"{statistics.median(s['wall_seconds'] for s in done):.0f} | {statistics.median(s['sps'] for s in done):,.0f} | "
        f"≥ {TARGETS[env_id]} | {REFERENCES[env_id]} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="LunarLander-v3,HalfCheetah-v5,Hopper-v5")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="batched")
    parser.add_argument("--section", default="beyond-cartpole", help="the marked section of docs/benchmarks.md to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        command = sweep(args.envs, args.seeds, args.launcher, Path(tmp))
        hours = (time.perf_counter() - start) / 3600
        rows = [row(env_id, Path(tmp)) for env_id in args.envs.split(",")]
    section = write_section(args.section, [
        "## PPO-clip at 1M steps" + (" on MuJoCo" if args.section == "mujoco-1m" else ": beyond CartPole"),
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, CPU only. "
        f"Produced by `python scripts/beyond_cartpole.py --envs {args.envs} --seeds {args.seeds} --launcher {args.launcher} "
        f"--section {args.section}` in {hours:.1f} h of wall time, which runs:",
        "",
        f"    {command}",
        "",
        "| env | final eval return (mean ± sd over seeds, 10 deterministic episodes each) | IQM [95% bootstrap CI] | per seed | completed | env steps | wall s per run (median) | SPS per run (median) | target | published PPO |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        NOTES,
    ])
    print(section)


if __name__ == "__main__":
    main()
