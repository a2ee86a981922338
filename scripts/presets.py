"""Every preset rlrun ships (`configs/tuned/<algo>_<env>.yaml`), 5 seeds at the preset's own
budget, trained as one sweep per algorithm through rlrun's batched launcher. Writes a table
into docs/benchmarks.md: per preset the final evaluation return, deterministic (the run's own
final evaluation: 10 episodes with the policy's most likely actions) and stochastic (10 episodes
with sampled actions, as `rlrun eval --stochastic`), the seeds whose deterministic evaluation
reaches the env's `solved_return`, the env steps and seconds until the mean of the last 20
training episodes first reached it, and published PPO numbers beside.

    python scripts/presets.py --envs CartPole-v1,Acrobot-v1,MountainCarContinuous-v0,Pendulum-v1,LunarLander-v3 --section presets-classic
    python scripts/presets.py --envs Hopper-v5,Walker2d-v5,HalfCheetah-v5 --section presets-mujoco
    python scripts/presets.py --envs MountainCarContinuous-v0 --set '~tuned' --section mcc-without-preset

`--set` adds overrides to every run (`~tuned`: the algorithm's and env's defaults instead of the
preset, for a before/after).

A preset meets its goal when at least 4 of its 5 seeds reach the solved return, or, where the
solved return is a published figure (MuJoCo: CleanRL's PPO at 1M steps), when the mean over
seeds is within one published standard deviation of it or above. Needs
`pip install -e '.[box2d,mujoco,stats]'`. Each process runs with torch_threads=1; wall seconds
are per run, a batched group's runs sharing one process and the two cores running two groups.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import write_section
from ladder import ladder_order

from rlrun import analysis, stats
from rlrun.evaluation import evaluate_run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EVAL_EPISODES = 10
GOAL_SEEDS = 4  # of 5


def presets(envs: list[str], algos: list[str] | None) -> dict[str, list[str]]:
    """algo -> the envs among `envs` it has a preset for (a file named after an env config)."""
    found: dict[str, list[str]] = {}
    for path in sorted((CONFIGS / "tuned").glob("*.yaml")):
        algo, _, env = path.stem.rpartition("_")  # algorithm names hold "_", env ids do not
        if env in envs and (algos is None or algo in algos) and (CONFIGS / "env" / f"{env}.yaml").is_file():
            found.setdefault(algo, []).append(env)
    return found


def sweep(algo: str, envs: list[str], seeds: str, extra: list[str], max_group_size: int, sweep_dir: Path) -> str:
    command = [
        "rlrun", "train", "-m", f"algo={algo}", f"env={','.join(envs)}", f"seed={seeds}", *extra,
        "hydra/launcher=batched", f"hydra.launcher.max_group_size={max_group_size}",
    ]
    subprocess.run([sys.executable, "-m", *command, f"hydra.sweep.dir={sweep_dir}"], check=False)  # a failed seed still reports
    return " ".join(command)


def published(env_id: str) -> list[dict]:
    """Every published PPO result shipped with rlrun (rlrun/reference_returns.yaml) for this env's task."""
    task = analysis.task_and_version(env_id)[0]
    return [
        {"source": table["name"].split(" ")[0], **entry}
        for table in analysis.references().values() for entry in table["results"] if analysis.task_and_version(entry["env"])[0] == task
    ]


def meets_goal(deterministic: list[float], solved_at: float, references: list[dict]) -> bool:
    """At least GOAL_SEEDS seeds solved; where the solved return is a published figure, a mean
    within one published standard deviation of it, or above."""
    standard = next((entry for entry in references if abs(entry["mean"] - solved_at) < 1), None)
    if standard is None:
        return sum(value >= solved_at for value in deterministic) >= GOAL_SEEDS
    return statistics.mean(deterministic) >= standard["mean"] - standard["spread"]


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.0f} ± {statistics.stdev(values) if len(values) > 1 else 0:.0f}"


def row(algo: str, env_id: str, runs: list[analysis.Run]) -> tuple[str, bool]:
    """The table row of one preset, and whether it meets its goal."""
    done = sorted((run for run in runs if run.status == "completed"), key=lambda run: run.info["seed"])
    solved_at = done[0].info["env.solved_return"]
    deterministic = [run.summary["eval_return_mean"] for run in done]
    stochastic = [float(evaluate_run(run.path, EVAL_EPISODES, stochastic=True).mean()) for run in done]
    iqm = stats.describe(deterministic)
    iqm_low, iqm_high = iqm["iqm_ci"] or (iqm["iqm"], iqm["iqm"])
    reached = [reach for reach in (run.reaching(solved_at) for run in done) if reach[0] is not None]
    references = published(env_id)
    meets = meets_goal(deterministic, solved_at, references)
    cells = [
        env_id, algo, f"{done[0].summary['total_timesteps']:,}", f"{solved_at:g}",
        mean_sd(deterministic), f"{iqm['iqm']:.0f} [{iqm_low:.0f}, {iqm_high:.0f}]", mean_sd(stochastic),
        ", ".join(f"{run.info['seed']}: {det:.0f} / {sto:.0f}" for run, det, sto in zip(done, deterministic, stochastic)),
        f"{sum(value >= solved_at for value in deterministic)}/{len(runs)}",
        f"{statistics.median(steps for steps, _ in reached):,.0f} ({len(reached)}/{len(runs)})" if reached else f"not reached (0/{len(runs)})",
        f"{statistics.median(seconds for _, seconds in reached):.0f}" if reached else "",
        f"{statistics.median(run.summary['wall_seconds'] for run in done):.0f}",
        "; ".join(f"{entry['mean']:.0f} ± {entry['spread']:.0f} ({entry['source']}, v{analysis.task_and_version(entry['env'])[1]}, {entry['steps']:,} steps)" for entry in references),
        "yes" if meets else "**no**",
    ]
    return "| " + " | ".join(cells) + " |", meets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="CartPole-v1,Acrobot-v1,MountainCarContinuous-v0,Pendulum-v1,LunarLander-v3")
    parser.add_argument("--algos", default=None, help="only these algorithms' presets (default: every algorithm's)")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--set", nargs="*", default=[], help="overrides added to every run, e.g. '~tuned'")
    parser.add_argument("--max-group-size", type=int, default=3, help="runs per batched group: small groups keep both cores busy to the end")
    parser.add_argument("--section", default="presets-classic", help="the marked section of docs/benchmarks.md to write")
    args = parser.parse_args()
    found = presets(args.envs.split(","), args.algos.split(",") if args.algos else None)
    if not found:
        sys.exit(f"no preset in {CONFIGS / 'tuned'} for {args.envs}")
    commands, rows, misses = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for algo, envs in found.items():
            commands.append(sweep(algo, envs, args.seeds, args.set, args.max_group_size, Path(tmp) / algo))
        minutes = (time.perf_counter() - start) / 60
        for algo, envs in found.items():
            runs = analysis.find_runs(Path(tmp) / algo)
            for env_id in envs:
                rows[env_id, algo], meets = row(algo, env_id, [run for run in runs if run.info.get("env.id") == env_id])
                misses += [] if meets else [f"{algo} on {env_id}"]
    order = args.envs.split(","), ladder_order()  # rows by env, then up the ladder
    section = write_section(args.section, [
        f"### {'Presets' if not args.set else 'With `' + ' '.join(args.set) + '`'}: {', '.join(args.envs.split(','))}",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, CPU only. "
        f"Produced by `python scripts/presets.py --envs {args.envs}{f' --algos {args.algos}' if args.algos else ''} --seeds {args.seeds}"
        f"{''.join(f' --set {shlex.quote(value)}' for value in args.set)} "
        f"--section {args.section}` in {minutes:.0f} minutes of wall time, which runs:",
        "",
        *(f"    {command}" for command in commands),
        "",
        "Returns are raw episode returns. deterministic: each run's final evaluation (10 episodes, the policy's "
        "most likely actions); stochastic: 10 episodes with actions sampled from the policy, on the same "
        "evaluation seeds; per seed: deterministic / stochastic. Solved: seeds whose deterministic evaluation "
        "reaches the env's solved return. Steps and seconds to it: until the mean of the last 20 training "
        "episodes first reached it (median over the seeds that did).",
        "",
        "| env | algo | budget (env steps) | solved at | deterministic (mean ± sd over seeds) | IQM [95% bootstrap CI] | stochastic (mean ± sd) | per seed | solved | env steps to it | seconds to it | wall s per run | published PPO | goal met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(rows[key] for key in sorted(rows, key=lambda key: (order[0].index(key[0]), order[1].index(key[1])))),
        "",
        f"Goal: at least {GOAL_SEEDS} of 5 seeds solved or, where the solved return is a published figure, a mean "
        f"within one published standard deviation of it or above. Not met: {', '.join(misses) or 'none'}.",
    ])
    print(section)


if __name__ == "__main__":
    main()
