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

    python scripts/bench.py --equal         # the engine at equal settings

runs rlrun and SB3 PPO with the same hyperparameters (rl-zoo3's, or the PPO defaults on
Hopper) on each workload of EQUAL, alternating the runners, and tabulates loop SPS (rlrun's
summary.json, SB3's `learn()`) and the mean return of the last 20 training episodes, in the
section "equal-settings-<torch_compile>", with "-<budget>" for `--budget` and "-<workloads>"
for a subset of the workloads.
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


# Equal settings: rlrun overrides and SB3 PPO keyword arguments for the same hyperparameters.
# Both: separate 64x64 tanh actor and critic, orthogonal init, Adam eps 1e-5, advantages
# normalised per minibatch, gradient norm clipped to 0.5, log sigma init 0, the same weight on
# the value loss (SB3's vf_coef 0.5 times its MSE; rlrun's value loss is half the MSE, as
# CleanRL's, so vf_coef 1.0: with 0.5 rlrun's CartPole runs end near 270 where SB3's reach 500),
# constant clip range 0.2 (rl-zoo3 anneals CartPole's; rlrun has no clip schedule), one torch
# thread. Where rl-zoo3 normalises (Pendulum, Hopper): observations and rewards, by Gymnasium's
# arithmetic in rlrun and VecNormalize in SB3 (which also clips them at 10). rl-zoo3's gSDE
# for Pendulum is left out: rlrun has none.
EQUAL = {
    "CartPole-v1": {
        "budget": 50_000, "n_envs": 8, "normalize": False,
        "sb3": dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0),
        "rlrun": ["env.num_envs=8", "algo.rollout_steps=32", "algo.num_minibatches=1", "algo.epochs=20", "algo.gamma=0.98",
                  "algo.gae_lambda=0.8", "algo.lr=1e-3", "algo.ent_coef=0.0"],
    },
    "Pendulum-v1": {
        "budget": 20_480, "n_envs": 4, "normalize": True,
        "sb3": dict(n_steps=1024, batch_size=64, n_epochs=10, gamma=0.9, gae_lambda=0.95, learning_rate=1e-3, ent_coef=0.0),
        "rlrun": ["env.num_envs=4", "algo.rollout_steps=1024", "algo.num_minibatches=64", "algo.epochs=10", "algo.gamma=0.9",
                  "algo.gae_lambda=0.95", "algo.lr=1e-3", "algo.ent_coef=0.0", "env.normalize_obs=true", "env.normalize_reward=true"],
    },
    "LunarLander-v3": {
        "budget": 32_768, "n_envs": 16, "normalize": False,
        "sb3": dict(n_steps=1024, batch_size=64, n_epochs=4, gamma=0.999, gae_lambda=0.98, learning_rate=3e-4, ent_coef=0.01),
        "rlrun": ["env.num_envs=16", "algo.rollout_steps=1024", "algo.num_minibatches=256", "algo.epochs=4", "algo.gamma=0.999",
                  "algo.gae_lambda=0.98", "algo.lr=3e-4", "algo.ent_coef=0.01"],
    },
    "Hopper-v5": {
        "budget": 20_480, "n_envs": 1, "normalize": True,
        "sb3": dict(n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, learning_rate=3e-4, ent_coef=0.0),
        "rlrun": ["env.num_envs=1", "algo.rollout_steps=2048", "algo.num_minibatches=32", "algo.epochs=10", "algo.gamma=0.99",
                  "algo.gae_lambda=0.95", "algo.lr=3e-4", "algo.ent_coef=0.0", "env.normalize_obs=true", "env.normalize_reward=true"],
    },
}
EQUAL_COMMON = ["algo=ppo_clip", "algo.anneal_lr=false", "algo.clip_eps=0.2", "algo.max_grad_norm=0.5", "algo.vf_coef=1.0",
                "algo.normalize_advantages=true", "algo.target_kl=null", "eval_episodes=0", "checkpoint_interval=0"]


def sb3_equal_worker(env_id: str, seed: int, budget: int, out: str) -> None:
    """SB3 PPO on `env_id` with EQUAL's settings."""
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    workload = EQUAL[env_id]
    env = make_vec_env(env_id, n_envs=workload["n_envs"], seed=seed)
    if workload["normalize"]:
        env = VecNormalize(env, gamma=workload["sb3"]["gamma"])
    model = PPO("MlpPolicy", env, clip_range=0.2, seed=seed, device="cpu", **workload["sb3"])
    start = time.perf_counter()
    model.learn(total_timesteps=budget)
    seconds = time.perf_counter() - start
    recent = [info["r"] for info in list(model.ep_info_buffer)[-20:]]
    Path(out).write_text(json.dumps({"sps": model.num_timesteps / seconds, "recent": float(np.mean(recent)) if recent else None}))


def equal_settings(seeds: list[int], workloads: list[str], compile_setting: str, budget: int | None) -> None:
    """The equal-settings table; `budget` replaces every workload's own (a longer run spreads
    the compile over more steps), in a section of its own."""
    command = f"--seeds {','.join(map(str, seeds))} --torch-compile {compile_setting}"
    command += f" --workloads {','.join(workloads)} --budget {budget}" if budget else ""
    lines = [
        "## The engine at equal settings: rlrun and SB3 PPO, same hyperparameters" + (f", {budget:,} env steps" if budget else ""), "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only, one process at a time, one torch thread each. "
        f"Produced by `python scripts/bench.py --equal {command}` "
        f"(rlrun with `torch_compile={compile_setting}`). Runners alternated per seed; median [min, max] over seeds. "
        "Loop SPS: env steps per second of the training loop (rlrun's summary.json; SB3's `learn()`). "
        "Return: mean of the last 20 training episodes (raw rewards) at the end of the budget. \"compiled\": how many of "
        "rlrun's runs compiled their update (summary.json); a compiling run's loop includes the compile, cold for the first "
        "seed (the minimum of its rlrun column), from inductor's on-disk cache for the later ones.", "",
        "| workload | env steps | rlrun SPS | SB3 SPS | ratio | rlrun return | SB3 return | compiled |", "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for env_id in workloads:
            workload, ours, theirs = {**EQUAL[env_id], **({"budget": budget} if budget else {})}, [], []
            for seed in seeds:
                ours.append(rlrun_run(tmp, f"{env_id}-{seed}", f"env={env_id}", *EQUAL_COMMON, *workload["rlrun"], f"seed={seed}",
                                      f"total_timesteps={workload['budget']}", f"torch_compile={compile_setting}"))
                out = tmp / f"sb3-{env_id}-{seed}.json"
                run_process([sys.executable, __file__, "sb3-equal-worker", env_id, str(seed), str(workload["budget"]), str(out)])
                theirs.append(json.loads(out.read_text()))
            ratios = [o["sps"] / t["sps"] for o, t in zip(ours, theirs)]
            returns = lambda runs, key: spread([r[key] for r in runs if r[key] is not None], ".0f")  # noqa: E731
            lines.append(
                f"| {env_id} | {workload['budget']:,} | {spread([r['sps'] for r in ours], ',.0f')} | {spread([r['sps'] for r in theirs], ',.0f')} | "
                f"{spread(ratios)} | {returns(ours, 'train_return_recent')} | {returns(theirs, 'recent')} | {sum(r['compiled'] for r in ours)}/{len(ours)} |"
            )
            print(lines[-1], flush=True)
            print("  per seed, rlrun / SB3 return:", ", ".join(f"{seed}: {o['train_return_recent']} / {t['recent']}" for seed, o, t in zip(seeds, ours, theirs)), flush=True)
    subset = "" if workloads == list(EQUAL) else "-" + "-".join(workloads)  # a subset does not replace the whole table
    print(write_section(f"equal-settings-{compile_setting}" + (f"-{budget}" if budget else "") + subset, lines))


def limit(overrides: tuple[str, ...] = (), repeats: int = 20) -> dict:
    """Per-update cost of a PPO-clip loop's parts (default: the default run), measured in this
    process: the vector env alone, acting (the actor and a sample every step, then log pi and
    the critic once, batched), a whole collection, and one update."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module

    from rlrun.algos import config_classes
    from rlrun.config import register_schemas, to_object
    from rlrun.policies import Acting
    from rlrun.trainer import Run, Trainer

    register_schemas(config_classes())
    with initialize_config_module(config_module="rlrun.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    config = to_object(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer([Run(0, config, {}, Path(tmp), {}, None)])  # a group of one, as `rlrun train` builds it
        collector, policy, rollout = trainer.collector, trainer.policy, trainer.rollout
        envs, steps, acting = collector.envs[0], rollout.steps, np.ones(1, dtype=bool)

        def collect() -> None:
            collector.collect(policy, rollout, acting, trainer.generators)

        def timed(work, times: int) -> float:
            start = time.perf_counter()
            for _ in range(times):
                work()
            return (time.perf_counter() - start) / times

        for _ in range(repeats):  # warm-up (and a compiled update's compilation)
            collect()
            trainer.update()
        actions = np.stack([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        env_seconds = timed(lambda: envs.step(actions), steps * repeats) * steps
        obs, head = collector.obs_np, policy.head

        def act() -> None:
            acting = Acting(policy.actor)
            noise = head.noise(trainer.generators, [0], (steps, envs.num_envs))
            for t in range(steps):  # acting: the actor and a sample, every step
                head.to_env(head.sample(acting(obs), noise[:, t]))
            with torch.inference_mode():  # once per rollout, batched: log pi(a|s) and the critic
                policy.head.log_prob(rollout.dist_params, rollout.actions)
                policy.value(rollout.obs.flatten(1, 2))

        forward_seconds = timed(act, repeats)
        collect_seconds = timed(collect, repeats)
        update_seconds = 0.0
        for _ in range(repeats):  # each on fresh data: target_kl would cut a repeated update short
            collect()
            update_seconds += timed(trainer.update, 1) / repeats
        envs.close()
    return {"env": env_seconds, "forward": forward_seconds, "collect": collect_seconds, "update": update_seconds,
            "steps_per_update": steps * config.env.num_envs, "compiled": trainer.compiled}


def parts_table() -> None:
    """Where an env step of the equal-settings Hopper-v5 run goes, eager and compiled."""
    hopper = ("env=Hopper-v5", *EQUAL_COMMON, *EQUAL["Hopper-v5"]["rlrun"])
    lines = [
        "## Where a Hopper-v5 env step goes (PPO defaults, 1 env x 2048 steps, 10 epochs of 32 minibatches)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Produced by `python scripts/bench.py --parts`: each part "
        "timed alone in one process (after 3 warm-up updates), in µs per env step.", "",
        "| part | eager | `torch_compile=true` |", "|---|---|---|",
    ]
    eager, compiled = (limit((*hopper, f"torch_compile={setting}"), repeats=3) for setting in ("false", "true"))
    per_step = lambda parts, key: parts[key] / parts["steps_per_update"] * 1e6  # noqa: E731
    rows = [
        ("vector env step alone", lambda p: per_step(p, "env")),
        ("acting: actor, sample, clip (every step); log pi and critic (batched)", lambda p: per_step(p, "forward")),
        ("rest of the collection: normalisation, episode statistics, rollout writes", lambda p: per_step(p, "collect") - per_step(p, "env") - per_step(p, "forward")),
        ("update: advantages, 320 minibatch steps, KL", lambda p: per_step(p, "update")),
        ("sum", lambda p: per_step(p, "collect") + per_step(p, "update")),
    ]
    lines += [f"| {name} | {value(eager):.0f} | {value(compiled):.0f} |" for name, value in rows]
    print(write_section("parts", lines))


def spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--equal", action="store_true", help="the equal-settings comparison instead (seeds 1,2,3 unless given)")
    parser.add_argument("--workloads", default=",".join(EQUAL), help="with --equal: which of " + ", ".join(EQUAL))
    parser.add_argument("--torch-compile", default="null", help="with --equal: rlrun's torch_compile (true, false, null: automatic)")
    parser.add_argument("--budget", type=int, default=None, help="with --equal: env steps of every workload instead of its own (a section of its own)")
    parser.add_argument("--parts", action="store_true", help="where a Hopper-v5 env step goes, eager and compiled (section \"parts\")")
    args = parser.parse_args()
    if args.parts:
        parts_table()
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.equal:
        equal_settings(seeds if "--seeds" in sys.argv else [1, 2, 3], args.workloads.split(","), args.torch_compile, args.budget)
        return
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
    elif len(sys.argv) > 1 and sys.argv[1] == "sb3-equal-worker":
        sb3_equal_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
