"""`rlrun compare` on synthetic run directories whose answer is known: identical distributions
(no significance), a clear shift (significant, P(A>B) near 1), the power estimate against a
simulation, and the bad input it must refuse or report around."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from rlrun import analysis, stats
from rlrun.cli import app

FAST = ["--resamples", "100"]  # the bootstrap's cost, not its accuracy, is what tests pay for


def make_run(root: Path, name: str, algo: str, seed: int, final: float | None, *, env: str = "CartPole-v1",
             status: str = "completed", cpu: float | None = 1.5, curve: list[tuple[int, float]] | None = None) -> Path:
    """A run directory with the files a real sweep job leaves: .hydra/ (the config, the
    choices and the job's overrides), the resolved config.yaml, summary.json and, with `curve`, TensorBoard
    events of the training return."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      env: {env}\n      algo: {algo}\n      hydra/launcher: basic\n")
    (run / ".hydra" / "overrides.yaml").write_text(f"- algo={algo}\n- seed={seed}\n")
    config = f"algo:\n  lr: 0.01\nenv:\n  id: {env}\n  num_envs: 8\nseed: {seed}\ntotal_timesteps: 50000\n"
    (run / ".hydra" / "config.yaml").write_text(config)  # Hydra's composed config; config.yaml: the resolved one
    (run / "config.yaml").write_text(config)
    summary = {"status": status, "algo": algo, "env": env, "seed": seed, "env_steps": 50000, "wall_seconds": 3.0}
    if status == "running":
        summary |= {"pid": 1, "host": "elsewhere"}  # alive as far as this machine can tell
    if status == "failed":
        summary["error"] = "diverged at update 3"
    if final is not None:
        summary |= {"eval_return_mean": final, "eval_return_std": 0.0, "train_return_recent": final}
    if cpu is not None:
        summary["cpu_seconds"] = cpu
    (run / "summary.json").write_text(json.dumps(summary))
    if curve:
        write_events(run / "tb", curve)
    return run


def write_events(directory: Path, curve: list[tuple[int, float]]) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(directory))
    for i, (step, value) in enumerate(curve):
        for tag in (analysis.RETURN_TAG, analysis.RECENT_RETURN_TAG):
            writer.add_event(Event(wall_time=1000.0 + i, step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))
    writer.close()


def make_sweep(root: Path, finals: dict[str, list[float]], **kwargs) -> Path:
    for algo, values in finals.items():
        for seed, final in enumerate(values, 1):
            make_run(root, f"{algo}_seed{seed}", algo, seed, float(final), **kwargs)
    return root


def rlrun(*args, columns=100):
    result = CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": str(columns)})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def compared(*args):
    result = rlrun("compare", *args, *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_identical_distributions_are_not_significant(tmp_path):
    draws = np.random.default_rng(1).normal(300, 50, size=(2, 8))
    result = compared(make_sweep(tmp_path, {"pg": draws[0], "ppo_clip": draws[1]}))
    (pair,) = result["pairs"]
    assert not pair["significant"] and pair["p_welch_holm"] > 0.05 and pair["p_mann_whitney_holm"] > 0.05
    low, high = pair["probability_of_improvement_ci"]
    assert low < 0.5 < high
    assert pair["verdict"].startswith(f"No significant difference between {pair['a']} and {pair['b']} with 8 seeds (p = ")
    assert f"about {pair['seeds_for_power']:,} seeds per group would be needed" in pair["verdict"]
    assert pair["seeds_for_power"] == stats.seeds_for_power(pair["cohens_d"]) > 8


def test_a_clear_shift_is_significant_with_p_of_improvement_near_one(tmp_path):
    rng = np.random.default_rng(2)
    sweep = make_sweep(tmp_path, {"pg": rng.normal(150, 30, 6), "ppo_clip": rng.normal(450, 30, 6)})
    result = compared(sweep)
    (pair,) = result["pairs"]
    assert (pair["a"], pair["b"]) == ("ppo_clip", "pg")  # the better group first, whatever the order found
    assert pair["significant"] and pair["p_welch"] < 1e-4 and pair["p_mann_whitney"] < 0.01
    assert pair["probability_of_improvement"] == 1.0 and pair["probability_of_improvement_ci"][0] > 0.9
    assert pair["verdict"].startswith("ppo_clip is better than pg (p = ") and "P(ppo_clip>pg) = 1.00" in pair["verdict"]
    groups = {row["group"]: row for row in result["groups"]}
    assert groups["ppo_clip"]["n"] == 6 and groups["ppo_clip"]["mean_ci"][0] < groups["ppo_clip"]["mean"] < groups["ppo_clip"]["mean_ci"][1]
    assert groups["pg"]["cpu_seconds"] == 1.5
    text = rlrun("compare", sweep, *FAST, columns=80).stdout
    assert text.splitlines()[-1] == pair["verdict"]
    assert max(map(len, text.splitlines()[1:-1])) <= 80 and "│ ppo_clip vs pg │" in text  # tables fit; sentences wrap


@pytest.mark.parametrize("d", [0.8, 1.5])
def test_the_seeds_for_80_percent_power_give_80_percent_power_in_simulation(d):
    n = stats.seeds_for_power(d)
    rng = np.random.default_rng(3)
    a, b = rng.normal(d, 1, size=(4000, n)), rng.normal(0, 1, size=(4000, n))
    rejected = scipy_stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05
    assert 0.77 <= rejected.mean() <= 0.85, (n, rejected.mean())
    fewer = scipy_stats.ttest_ind(a[:, : n // 2], b[:, : n // 2], axis=1, equal_var=False).pvalue < 0.05
    assert fewer.mean() < 0.7  # and the estimate is not simply generous
    assert stats.seeds_for_power(0.0) is None and stats.seeds_for_power(50.0) == 2


def test_holm_adjusts_over_every_pair_compared(tmp_path):
    rng = np.random.default_rng(4)
    result = compared(make_sweep(tmp_path, {"a2c": rng.normal(100, 20, 5), "pg": rng.normal(130, 20, 5), "ppo_clip": rng.normal(400, 20, 5)}))
    assert len(result["pairs"]) == 3
    raw = sorted((pair["p_welch"], pair["p_welch_holm"]) for pair in result["pairs"])
    assert raw[0][1] == pytest.approx(min(1, 3 * raw[0][0]))  # the smallest p is multiplied by the number of pairs
    assert all(adjusted >= p for p, adjusted in raw)


def test_unfinished_runs_are_listed_and_a_group_of_one_reports_what_it_can(tmp_path):
    make_sweep(tmp_path, {"pg": [100, 120, 110]})
    make_run(tmp_path, "ppo_clip_seed1", "ppo_clip", 1, 480.0, cpu=None)
    failed = make_run(tmp_path, "ppo_clip_seed2", "ppo_clip", 2, None, status="failed")
    running = make_run(tmp_path, "ppo_clip_seed3", "ppo_clip", 3, None, status="running")
    queued = make_run(tmp_path, "ppo_clip_seed4", "ppo_clip", 4, None, env="Acrobot-v1")
    for file in ("config.yaml", "summary.json"):  # a job not started yet: no env of its own to compare
        (queued / file).unlink()
    result = compared(tmp_path)
    left_out = {(str(failed), "failed"), (str(running), "running"), (str(queued), "running")}
    assert {(entry["run"], entry["status"]) for entry in result["left_out"]} == left_out
    one = next(row for row in result["groups"] if row["group"] == "ppo_clip")
    assert (one["n"], one["runs"], one["mean"], one["mean_ci"], one["cpu_seconds"]) == (1, 4, 480.0, None, None)
    (pair,) = result["pairs"]
    assert not pair["tested"] and pair["verdict"] == "ppo_clip vs pg: not tested: ppo_clip has 1 finished run; a test needs at least 2 per group."
    text = rlrun("compare", tmp_path, *FAST).stdout
    assert f"left out (failed: diverged at update 3): {failed}\n" in text and f"left out (running): {running}\n" in text
    row = next(line for line in text.splitlines() if line.startswith("│ ppo_clip "))
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["ppo_clip", "1/4", "480.0", "480.0", "480.0", "-"]  # no CI, no cpu_seconds


def test_groups_of_different_environments_refuse_unless_forced(tmp_path):
    make_sweep(tmp_path / "a", {"ppo_clip": [400, 420]})
    make_sweep(tmp_path / "b", {"ppo_clip": [-90, -85]}, env="Acrobot-v1")
    result = rlrun("compare", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 2 and result.stdout == ""
    assert "not all of one environment" in result.stderr and "--force" in result.stderr and "Traceback" not in result.stderr
    forced = compared(tmp_path / "a", tmp_path / "b", "--force")
    assert [row["group"] for row in forced["groups"]] == [str(tmp_path / "a"), str(tmp_path / "b")]  # a directory per group


def test_one_group_needs_a_key_or_a_reference(tmp_path):
    make_sweep(tmp_path, {"ppo_clip": [490, 500, 480]})
    result = rlrun("compare", tmp_path)
    assert result.exit_code == 2 and "Only one group (ppo_clip)" in result.stderr and "--by" in result.stderr
    by_seed = compared(tmp_path, "--by", "seed")
    assert [row["group"] for row in by_seed["groups"]] == ["1", "2", "3"] and all(not pair["tested"] for pair in by_seed["pairs"])


def test_reference_places_a_group_beside_published_numbers_and_marks_version_mismatch(tmp_path):
    make_sweep(tmp_path, {"ppo_clip": [2100, 2500, 1900]}, env="Hopper-v5")
    result = compared(tmp_path, "--reference", "cleanrl")
    (row,) = result["reference"]["rows"]
    assert row["published"]["env"] == "Hopper-v4" and row["published"]["mean"] == 2382.86
    assert "env version differs: Hopper-v5 here, Hopper-v4 published" in row["notes"]
    assert row["position"] == "published mean within CI" and result["reference"]["spread"] == "std over 3 seeds"
    same = compared(make_sweep(tmp_path.parent / f"{tmp_path.name}_cartpole", {"pg": [500, 480]}), "--reference", "rl-zoo3")
    (cartpole,) = same["reference"]["rows"]
    assert cartpole["published"]["env"] == "CartPole-v1" and not any("version" in note for note in cartpole["notes"])
    assert "algo pg here, PPO published" in cartpole["notes"]
    text = rlrun("compare", tmp_path, "--reference", "cleanrl", *FAST, columns=120).stdout
    assert "beside CleanRL PPO" in text and "2382.86 ± 271.74" in text
    for args, why in ((["--reference", "sb3"], "--reference must be one of cleanrl, rl-zoo3"), (["--reference", "cleanrl", "--metric", "auc"], "use --metric eval or recent")):
        refused = rlrun("compare", tmp_path, *args)
        assert refused.exit_code == 2 and why in refused.stderr


def test_every_published_number_names_its_source_and_env_version():
    for source in analysis.references().values():
        assert source["source"].startswith("https://") and source["measure"] and source["spread"]
        for entry in source["results"]:
            assert analysis.task_and_version(entry["env"])[1] is not None and entry["steps"] > 0


def test_area_under_the_curve_and_steps_to_threshold(tmp_path):
    for seed, slope in enumerate((100.0, 80.0, 60.0), 1):  # the fast ones reach 475 at 5,000, 6,000, 8,000 steps
        make_run(tmp_path, f"ppo_clip_seed{seed}", "ppo_clip", seed, 500.0, curve=[(1000 * i, min(500.0, slope * i)) for i in range(1, 11)])
        make_run(tmp_path, f"pg_seed{seed}", "pg", seed, 500.0, curve=[(1000 * i, slope / 3 * i) for i in range(1, 11)])  # never
    auc = compared(tmp_path, "--metric", "auc")
    means = {row["group"]: row["mean"] for row in auc["groups"]}
    assert means["ppo_clip"] > means["pg"] and auc["pairs"][0]["a"] == "ppo_clip"
    assert "over the first 10,000 env steps" in auc["measure"]
    steps = compared(tmp_path, "--metric", "steps", "--threshold", "475")
    groups = {row["group"]: row for row in steps["groups"]}
    assert groups["pg"]["mean"] == 10000 and groups["ppo_clip"]["median"] == 6000
    assert not steps["higher_is_better"] and steps["pairs"][0]["a"] == "ppo_clip"  # fewer steps is better
    assert "pg: 3 of 3 runs never reached 475; counted at their end (a lower bound)" in steps["notes"]
    assert compared(tmp_path, "--metric", "eval")["pairs"][0]["verdict"].startswith("No significant difference")
