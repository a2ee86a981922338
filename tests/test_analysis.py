"""Reading sweeps back: `rlrun summary` and `rlrun plot` on real runs, on runs still going or
killed, and on runs whose files are damaged."""

import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from typer.testing import CliRunner

from helpers import TINY, run_rlrun
from rlrun.analysis import RETURN_TAG, Run, default_threshold, on_grid, plot_curves
from rlrun.cli import app
from rlrun.stats import mean_band


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real sweep of 2 algorithms x 2 seeds (about 5 s); tests that change it use a copy."""
    root = tmp_path_factory.mktemp("analysis")
    result = run_rlrun("train", "-m", "algo=ppo_clip,ppo_kl", "seed=1,2", *TINY, f"hydra.sweep.dir={root / 'sweep'}", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "sweep"


@pytest.fixture
def copy(sweep, tmp_path):
    return Path(shutil.copytree(sweep, tmp_path / "sweep"))


def rlrun(*args, columns=200):
    """`rlrun ARGS` in this process, on a terminal `columns` wide."""
    result = CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": str(columns)})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def runs_of(sweep_dir):
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def summary_of(run):
    return json.loads((run / "summary.json").read_text())


def table_rows(stdout):
    """Cells of each body line of the first table (between the header rule and the bottom)."""
    lines = stdout.splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("┡")) + 1:]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in body[:next(i for i, line in enumerate(body) if line.startswith("└"))]]


def test_summary_tabulates_each_group(sweep):
    result = rlrun("summary", sweep, "--threshold", "10")
    assert result.exit_code == 0, result.stderr
    rows = {cells[0]: cells for cells in table_rows(result.stdout)}
    assert set(rows) == {"ppo_clip", "ppo_kl"}
    for algo, cells in rows.items():
        finals = [summary_of(run)["eval_return_mean"] for run in runs_of(sweep) if f"algo={algo}," in run.name]
        assert cells[1] == "2/2" and cells[2].startswith(f"{np.mean(finals):.1f} ± ")
        assert cells[4] == "2/2" and cells[5] != "-"  # every run's recent return passed 10
        cpu = [summary_of(run)["cpu_seconds"] for run in runs_of(sweep) if f"algo={algo}," in run.name]
        assert cells[7] == f"{np.median(cpu):.1f}"  # the trainer's cpu_seconds, median over the group
    assert "first averaged 475" in " ".join(rlrun("summary", sweep).stdout.split())  # CartPole-v1's own threshold


def test_summary_fits_80_columns_without_splitting_a_number(copy):
    finals = {run: summary_of(run)["eval_return_mean"] for run in runs_of(copy)}
    groups = rlrun("summary", copy, "--threshold", "10", columns=80).stdout
    assert max(map(len, groups.splitlines())) <= 80 and len(table_rows(groups)) == 2  # a line per group
    per_run = rlrun("summary", copy, "--runs", columns=80).stdout
    assert max(map(len, per_run.splitlines()[:-4])) <= 80  # all but the directories listed below
    assert sorted(row[3] for row in table_rows(per_run)) == sorted(f"{final:.1f}" for final in finals.values())  # a line per run
    ranked = sorted(finals, key=lambda run: -finals[run])
    assert per_run.splitlines()[-4:] == [f"{rank:>3}  {run}" for rank, run in enumerate(ranked, 1)]  # directories whole, below
    wide = rlrun("summary", copy, "--runs", columns=200).stdout
    assert [row[-1] for row in table_rows(wide)] == [run.name for run in ranked]  # directories in the table
    for i, run in enumerate(runs_of(copy)):  # four more swept keys: stacked in one column
        with open(run / ".hydra" / "overrides.yaml", "a") as overrides:
            overrides.writelines(f"- +search.p{k}=0.00{i}2345678\n" for k in range(4))
    stacked = rlrun("summary", copy, "--runs", columns=80).stdout
    assert max(map(len, stacked.splitlines()[:-4])) <= 80 and "│ search.p3=0.0032345678 │" in stacked


def test_summary_per_run_ranks_runs_and_names_optunas_best_trial(copy):
    runs = runs_of(copy)
    failed, running, *completed = runs
    (failed / "summary.json").write_text(json.dumps({**summary_of(failed), "status": "failed", "error": "boom", "eval_return_mean": None}))
    (running / "summary.json").unlink()
    best = max(completed, key=lambda run: summary_of(run)["eval_return_mean"])
    best_value, info = summary_of(best)["eval_return_mean"], OmegaConf.load(best / ".hydra" / "hydra.yaml").hydra.runtime.choices
    results = {"name": "optuna", "best_params": {"algo": info.algo, "seed": summary_of(best)["seed"]}, "best_value": best_value}
    OmegaConf.save(results, copy / "optimization_results.yaml")
    result = rlrun("summary", copy, "--runs")
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    header = [cell.strip() for cell in next(line for line in result.stdout.splitlines() if line.startswith("┃ #")).split("┃")[1:-1]]
    assert header == ["#", "algo", "seed", "final", "recent", "steps", "secs", "status", "run"]  # what the sweep varied
    ranked = sorted(completed, key=lambda run: -summary_of(run)["eval_return_mean"])
    assert [row[-1] for row in rows] == [run.name for run in ranked] + [failed.name, running.name]
    assert [row[-2] for row in rows] == ["completed", "completed", "failed", "running"]
    assert rows[0][3] == f"{best_value:.1f}" and rows[0][2] == str(summary_of(best)["seed"])
    assert f"Optuna's best trial ({best_value:g}): {best}\n" in result.stdout
    assert f"failed: {failed}: boom\n" in result.stdout and "running: 1 run\n" in result.stdout
    OmegaConf.save({"best_params": {"algo": "pg", "seed": 9}, "best_value": 1.0}, copy / "optimization_results.yaml")
    assert "no run directory here matches it" in rlrun("summary", copy, "--runs").stdout


DAMAGE = {
    "truncated summary": ("summary.json", lambda text: text[: len(text) // 2], "summary.json: invalid JSON"),
    "random summary": ("summary.json", lambda _: os.urandom(64), "summary.json: "),
    "empty summary": ("summary.json", lambda _: b"", "summary.json: empty"),
    "summary list": ("summary.json", lambda _: b"[1, 2]", "summary.json: holds a list, not a mapping"),
    "summary wrong types": ("summary.json", lambda _: b'{"status": 1, "eval_return_mean": "high"}', "summary.json: unexpected status, eval_return_mean"),
    "binary config": ("config.yaml", lambda _: b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "config.yaml: not UTF-8 text"),
    "invalid config": ("config.yaml", lambda _: b"algo: {lr: [0.1\nenv: x", "config.yaml: invalid YAML"),
    "binary hydra": (".hydra/hydra.yaml", lambda _: b"\x00\x01\xff" * 20, ".hydra/hydra.yaml: not UTF-8 text"),
    "invalid hydra": (".hydra/hydra.yaml", lambda _: b"hydra:\n  runtime: [choices\n", ".hydra/hydra.yaml: invalid YAML"),
    "hydra without choices": (".hydra/hydra.yaml", lambda _: b"hydra: 3\n", ".hydra/hydra.yaml: no hydra.runtime.choices"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_is_listed_and_the_rest_summarised(copy, tmp_path, case):
    name, damage, why = DAMAGE[case]
    damaged, *rest = runs_of(copy)
    (damaged / name).write_bytes(damage((damaged / name).read_bytes()))
    summary = rlrun("summary", copy)
    assert summary.exit_code == 0 and f"note: damaged: {damaged}: {why}" in summary.stderr
    assert {cells[0]: cells[1] for cells in table_rows(summary.stdout)} == {"ppo_clip": "1/1", "ppo_kl": "2/2"}
    per_run = rlrun("summary", copy, "--runs")
    assert per_run.exit_code == 0 and len(table_rows(per_run.stdout)) == 3
    plot = rlrun("plot", copy, "-o", tmp_path / "curves.png")
    assert plot.exit_code == 0 and f"note: damaged: {damaged}: {why}" in plot.stderr and (tmp_path / "curves.png").is_file()


def test_a_sweep_of_damaged_runs_is_one_paragraph_error(copy):
    for run in runs_of(copy):
        (run / "summary.json").write_text("{")
    for command in ("summary", "plot"):
        result = rlrun(command, copy)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.splitlines()[-1].startswith("error: Every run in") and "Traceback" not in result.stderr


def _gone_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_running_run_whose_process_is_gone_is_dead(copy):
    dead, alive, elsewhere, starting = runs_of(copy)
    here = socket.gethostname()
    for run, pid, host in ((dead, _gone_pid(), here), (alive, os.getpid(), here), (elsewhere, _gone_pid(), "another-host")):
        (run / "summary.json").write_text(json.dumps({"status": "running", "pid": pid, "host": host, "algo": "ppo_clip"}))
    (starting / "summary.json").unlink()
    assert [Run.load(run).status for run in (dead, alive, elsewhere, starting)] == ["dead", "running", "running", "running"]
    result = rlrun("summary", copy)
    resume = shlex.quote(f"resume={dead}")
    assert f"dead: {dead} (killed before it finished; `rlrun train {resume}` continues it)\n" in result.stdout
    assert "running: 3 runs\n" in result.stdout
    assert [row[-2] for row in table_rows(rlrun("summary", copy, "--runs").stdout)] == ["dead", "running", "running", "running"]


def test_plot_titles_with_env_and_sweep_and_writes_into_the_sweep(copy, tmp_path):
    result = rlrun("plot", copy)
    assert result.exit_code == 0, result.stderr
    with Image.open(copy / "curves.png") as image:
        assert image.size == (1200, 750) and image.info["Title"] == f"CartPole-v1: sweep {copy.parent.name}/sweep, by algo"
    result = rlrun("plot", copy, "--x", "seconds", "-o", tmp_path / "seconds.png")
    assert result.exit_code == 0 and (tmp_path / "seconds.png").is_file()


def test_plot_profile_draws_rliables_performance_profiles_of_completed_runs(copy, tmp_path):
    failed = runs_of(copy)[0]
    (failed / "summary.json").write_text(json.dumps({**summary_of(failed), "status": "failed", "error": "boom"}))
    result = rlrun("plot", copy, "--profile")
    assert result.exit_code == 0, result.stderr
    assert f"note: {failed.name}: failed, left out" in result.stderr and f"wrote {copy / 'profile.png'}" in result.stdout
    with Image.open(copy / "profile.png") as image:
        assert image.size == (1200, 750) and image.info["Title"] == f"CartPole-v1: sweep {copy.parent.name}/sweep, by algo"


def test_plot_draws_a_panel_per_environment_rather_than_mixing_them(copy):
    for run in [run for run in runs_of(copy) if "seed=2" in run.name]:
        config = OmegaConf.load(run / "config.yaml")
        config.env.id = "Acrobot-v1"
        OmegaConf.save(config, run / "config.yaml")
    result = rlrun("plot", copy)
    assert result.exit_code == 0, result.stderr
    with Image.open(copy / "curves.png") as image:
        assert image.size == (1500, 675) and image.info["Title"].startswith("CartPole-v1, Acrobot-v1: ")
    assert "group ppo_clip mixes environments" in rlrun("summary", copy).stderr


def _fake_run(tmp_path, name, steps):
    run = Run(tmp_path / name, info={"env.id": "CartPole-v1"})
    run.scalars = {RETURN_TAG: [SimpleNamespace(step=s, value=float(s), wall_time=s / 100) for s in steps]}
    return run


def test_a_group_curve_runs_to_its_longest_run_and_says_where_runs_end(tmp_path):
    grid, values = on_grid([(np.array([0.0, 10.0]), np.array([0.0, 10.0])), (np.array([0.0, 4.0]), np.array([4.0, 0.0]))], points=6)
    mean, low, high = mean_band(values)
    assert grid.tolist() == [0, 2, 4, 6, 8, 10] and np.isnan(values[1, 3:]).all()
    assert mean.tolist() == [2.0, 2.0, 2.0, 6.0, 8.0, 10.0]  # past 4: the run still going
    assert (low <= mean).all() and (high >= mean).all()
    runs = [_fake_run(tmp_path, "long", range(100, 1001, 100)), _fake_run(tmp_path, "short", range(100, 401, 100))]
    notes = plot_curves({"ppo": runs}, "steps", tmp_path / "c.png", "t")
    assert notes == ["ppo: runs end between 400 and 1,000 steps; past 400 the mean and band are over the runs still going (dashed)"]


def test_readers_cope_with_runs_in_progress_and_missing_data(sweep, tmp_path):
    partial = tmp_path / "partial"
    whole, starting = runs_of(sweep)[:2]  # one whole run, one that has written no events or summary yet
    shutil.copytree(whole, partial / whole.name)
    shutil.copytree(starting, partial / starting.name, ignore=shutil.ignore_patterns("summary.json", "tb"))
    summary = rlrun("summary", partial)
    assert summary.exit_code == 0 and "running: 1 run\n" in summary.stdout
    plot = rlrun("plot", partial, "-o", tmp_path / "p.png")
    assert plot.exit_code == 0 and f"note: {starting.name}: no {RETURN_TAG} logged (running), left out" in plot.stderr
    empty = rlrun("summary", tmp_path / "nothing_here")
    assert empty.exit_code == 2 and empty.stderr.startswith("error: ") and "Traceback" not in empty.stderr


def test_the_default_threshold_is_the_envs_solved_return(tmp_path):
    def runs(**info):
        return [Run(tmp_path, info={"env.id": "Hopper-v5", **info})] * 2

    assert default_threshold(runs(**{"env.solved_return": 2383.0})) == 2383.0
    assert default_threshold(runs()) == 3800.0  # saved before env.solved_return: Gymnasium's reward threshold
    assert default_threshold(runs(**{"env.solved_return": None})) == 3800.0
    assert default_threshold([Run(tmp_path, info={"env.id": "Pendulum-v1", "env.solved_return": None})]) is None
