"""Speed on CartPole-v1: rlrun against Stable-Baselines3 PPO, and the loop against its limit.

    pip install -e '.[bench]'
    python scripts/bench.py                 # seeds 1-5; a few minutes on a 2-core machine
    python scripts/bench.py --seeds 1,2

Measures, each in fresh processes, one at a time (after an untimed warm-up of each runner):
- time to solve: wall seconds of the whole process (interpreter start, imports, Hydra
  included) until the mean return of the last 20 training episodes reaches 475, confirmed by
  a final deterministic evaluation mean >= 475 over 10 episodes. rlrun runs its defaults
  (50k-step budget) with `target_return=475`; SB3 runs PPO with rl-baselines3-zoo's CartPole-v1
  hyperparameters and a callback that stops at the same criterion (300k-step budget). Both
  with one torch thread.
- throughput: env steps per second of the whole training loop at a fixed 50k-step budget,
  each rlrun algorithm and SB3 PPO, with the peak resident memory of the process.
- the limit: what the loop's parts cost alone at the default sizes (vector-env step, policy
  forward and sampling, one update), and the loop's overhead over their sum; and start-up:
  the whole process of a run with a one-rollout budget and no evaluation, minus its loop.
Writes a markdown table into docs/benchmarks.md.
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

ALGOS = ["pg", "pg_baseline", "ppo_kl", "ppo_clip"]
SOLVED = 475.0
BUDGET = 50_000


def run_process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of a child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def rlrun_run(tmp: Path, name: str, *overrides: str) -> dict:
    run_dir = tmp / name
    seconds, rss = run_process([sys.executable, "-m", "rlrun", "train", f"hydra.run.dir={run_dir}", *overrides])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seconds": seconds, "rss": rss, **summary}


def sb3_run(tmp: Path, seed: int, stop: bool, budget: int) -> dict:
    out = tmp / f"sb3-{seed}-{stop}.json"
    seconds, rss = run_process([sys.executable, __file__, "sb3-worker", str(seed), str(int(stop)), str(budget), str(out)])
    return {"seconds": seconds, "rss": rss, **json.loads(out.read_text())}


def sb3_worker(seed: int, stop: bool, budget: int, out: str) -> None:
    """SB3 PPO with rl-baselines3-zoo's CartPole-v1 settings (hyperparams/ppo.yml)."""
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)

    class StopWhenSolved(BaseCallback):
        def _on_step(self) -> bool:
            recent = [info["r"] for info in list(self.model.ep_info_buffer)[-20:]]
            return not (stop and len(recent) == 20 and np.mean(recent) >= SOLVED)

    linear = lambda start: (lambda progress: progress * start)  # noqa: E731  (zoo's lin_ schedules)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
        ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=StopWhenSolved())
    train_seconds = time.perf_counter() - start
    recent = [info["r"] for info in list(model.ep_info_buffer)[-20:]]
    eval_mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=seed + 1_000_000), n_eval_episodes=10, deterministic=True)
    Path(out).write_text(json.dumps({
        "env_steps": model.num_timesteps, "sps": model.num_timesteps / train_seconds,
        "target_reached": bool(len(recent) == 20 and np.mean(recent) >= SOLVED), "eval_return_mean": float(eval_mean),
    }))


def limit() -> dict:
    """Per-update cost of the default PPO-clip loop's parts, measured in this process."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module

    from rlrun.algos import config_classes
    from rlrun.config import register_schemas, to_object
    from rlrun.trainer import Run, Trainer

    register_schemas(config_classes())
    with initialize_config_module(config_module="rlrun.configs", version_base="1.3"):
        cfg = compose(config_name="config")
    config = to_object(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer([Run(0, config, {}, Path(tmp), {}, None)])  # a group of one, as `rlrun train` builds it
        collector, policy, rollout = trainer.collector, trainer.policy, trainer.rollout
        envs, steps, acting = collector.envs[0], rollout.steps, np.ones(1, dtype=bool)

        def collect() -> None:
            collector.collect(policy, rollout, acting, trainer.generators)

        for _ in range(20):
            collect()
            trainer.update()
        actions = envs.action_space.sample()
        start = time.perf_counter()
        for _ in range(steps * 20):
            envs.step(actions)
        env_seconds = (time.perf_counter() - start) / 20
        obs = collector.obs
        start = time.perf_counter()
        for _ in range(20):
            with torch.inference_mode():
                for _ in range(steps):  # acting: the actor and a sample, every step
                    policy.head.sample(policy.actor(obs), trainer.generators, [0])
                # once per rollout, batched: log pi(a|s) and the critic
                policy.distribution(rollout.dist_params).log_prob(rollout.actions)
                policy.value(rollout.obs.flatten(1, 2))
        forward_seconds = (time.perf_counter() - start) / 20
        update_seconds = 0.0
        for _ in range(10):  # each on fresh data: target_kl would cut a repeated update short
            collect()
            start = time.perf_counter()
            trainer.update()
            update_seconds += (time.perf_counter() - start) / 10
        envs.close()
    return {"env": env_seconds, "forward": forward_seconds, "update": update_seconds, "steps_per_update": steps * config.env.num_envs}


def spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["## Speed: CartPole-v1 against Stable-Baselines3", "",
             f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, CPU only, one process at a time. "
             f"Produced by `python scripts/bench.py --seeds {args.seeds}`. Median [min, max] over seeds.", ""]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Untimed first: the first process after a pause runs on cold caches (about +0.7 s).
        rlrun_run(tmp, "warm-up", "total_timesteps=1", "env.num_envs=1", "algo.rollout_steps=1", "algo.num_minibatches=1", "eval_episodes=0")
        sb3_run(tmp, 0, stop=False, budget=1)
        ours, theirs = [], []
        for s in seeds:  # alternated, so both see the same machine
            ours.append(rlrun_run(tmp, f"solve-{s}", f"seed={s}", "target_return=475"))
            theirs.append(sb3_run(tmp, s, stop=True, budget=300_000))
        solved = lambda r: r["target_reached"] and r["eval_return_mean"] >= SOLVED  # noqa: E731
        lines += [
            "### Time to solve (whole process)", "",
            "| runner | wall s | env steps | solved | per seed (s) |", "|---|---|---|---|---|",
            f"| rlrun `algo=ppo_clip` (defaults) | {spread([r['seconds'] for r in ours])} | {spread([r['env_steps'] for r in ours], ',.0f')} | "
            f"{sum(map(solved, ours))}/{len(ours)} | {', '.join(format(r['seconds'], '.1f') for r in ours)} |",
            f"| SB3 PPO (rl-zoo3 hyperparameters) | {spread([r['seconds'] for r in theirs])} | {spread([r['env_steps'] for r in theirs], ',.0f')} | "
            f"{sum(map(solved, theirs))}/{len(theirs)} | {', '.join(format(r['seconds'], '.1f') for r in theirs)} |",
            "", f"SB3 / rlrun time ratio per seed: {', '.join(format(t['seconds'] / o['seconds'], '.2f') for o, t in zip(ours, theirs))}.", "",
            "### Throughput (50k env steps, whole training loop)", "",
            "| runner | loop SPS | peak RSS MB |", "|---|---|---|",
        ]
        throughput = {}
        for algo in ALGOS:
            runs = throughput[algo] = [rlrun_run(tmp, f"{algo}-{s}", f"algo={algo}", f"seed={s}", f"total_timesteps={BUDGET}", "eval_episodes=0") for s in seeds[:3]]
            lines.append(f"| rlrun `algo={algo}` | {spread([r['sps'] for r in runs], ',.0f')} | {spread([r['rss'] for r in runs], '.0f')} |")
        runs = [sb3_run(tmp, s, stop=False, budget=BUDGET) for s in seeds[:3]]
        lines.append(f"| SB3 PPO (rl-zoo3 hyperparameters) | {spread([r['sps'] for r in runs], ',.0f')} | {spread([r['rss'] for r in runs], '.0f')} |")
        parts = limit()
        one_update = [rlrun_run(tmp, f"startup-{s}", f"seed={s}", f"total_timesteps={parts['steps_per_update']}", "eval_episodes=0") for s in seeds[:3]]
    loop = parts["steps_per_update"] / statistics.median(r["sps"] for r in throughput["ppo_clip"])
    floor = parts["env"] + parts["forward"] + parts["update"]
    lines += [
        "", "### The limit (default PPO-clip, per update of "
        f"{parts['steps_per_update']} env steps)", "",
        "| part | ms per update |", "|---|---|",
        f"| vector-env steps alone | {parts['env'] * 1e3:.2f} |",
        f"| policy forward + sampling alone | {parts['forward'] * 1e3:.2f} |",
        f"| one update (advantages, epochs, KL) | {parts['update'] * 1e3:.2f} |",
        f"| sum | {floor * 1e3:.2f} |",
        f"| whole loop, measured (throughput runs) | {loop * 1e3:.2f} |",
        "", f"Overhead ratio (loop / sum of parts): {loop / floor:.2f}.", "",
        "Start-up and exit, outside the loop (a whole process with a one-rollout budget, which takes two "
        f"updates since reset steps do not count, and no evaluation, minus its loop): {spread([r['seconds'] - r['wall_seconds'] for r in one_update])} s.",
    ]
    print(write_section("speed", lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sb3-worker":
        sb3_worker(int(sys.argv[2]), bool(int(sys.argv[3])), int(sys.argv[4]), sys.argv[5])
    else:
        main()
