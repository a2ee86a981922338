"""The `rlrun` command: a thin Typer front end that hands `train` overrides to Hydra.

Training logic lives in `rlrun.trainer`; this module parses, dispatches and turns user errors
(`RLRunError`) into one clean paragraph and an exit code: 2 for a configuration Hydra or
rlrun refuses, 1 for a run that failed, 128 + signal for an interrupted one.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import gc
import importlib.util
import os
import re
import shutil
import signal
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import hydra
import typer
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from rlrun import __version__
from rlrun.config import register_schemas
from rlrun.errors import RLRunError

app = typer.Typer(
    help=(
        "rlrun: on-policy reinforcement learning from the shell, from vanilla policy gradient "
        "to PPO, on Gymnasium environments, with TensorBoard curves and Hydra sweeps."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)
_job_started = False  # whether Hydra got as far as running a job
_new_run_dirs: set[Path] = set()  # run directories this process created (a refusal removes them)
_new_parents: set[Path] = set()  # and the directories it made to hold them


def _print_version() -> None:
    Console().print(f"rlrun {__version__} (hydra-core {hydra.__version__}, Python {sys.version.split()[0]})", highlight=False)


def _version_option(value: bool) -> None:
    if value:
        _print_version()
        raise typer.Exit()


@app.callback()
def _commands(
    version: bool = typer.Option(False, "--version", callback=_version_option, is_eager=True, help="Print rlrun's version and exit."),
) -> None:
    """Keeps `train` a subcommand (Typer flattens single-command apps)."""


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def _train_job(cfg: DictConfig) -> float:
    """One Hydra job: train in the job's run directory, return the final evaluation return."""
    global _job_started
    _job_started = True
    from rlrun.lifecycle import RunInterrupted, StopSignals

    with StopSignals() as signals:  # before torch's import: a stop during start-up is clean too
        from rlrun.trainer import train

        if not gc.get_freeze_count():
            # The hundreds of thousands of objects torch's import made live as long as the
            # process: leave them out of every garbage collection, including the one at exit.
            # Only once: in a sweep, a later freeze would also pin the earlier jobs' garbage.
            gc.freeze()
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        choices = HydraConfig.get().runtime.choices
        chosen = {"algo": choices.algo, "env": choices.env, "preset": _preset(choices.get("tuned"))}
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return train(cfg, run_dir, signals, chosen, continue_run=multirun)
        except RunInterrupted:
            signals.hand_over()  # a cluster's warning: its handler requeues the job (the checkpoint is written)
            raise
        except RLRunError as err:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # Hydra reports it, marks this job failed and runs the sweep's other jobs
            if err.exit_code == 2 and run_dir.resolve() in _new_run_dirs:
                _remove_new_run_dir(run_dir)
            _exit_with(err)


def _remove_new_run_dir(run_dir: Path) -> None:
    """Refused before training: leave no run behind, nor the directories made to hold it."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in sorted(_new_parents, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if empty


@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],  # `rlrun train --help` is Hydra's help: config groups, flags
    }
)
def train(ctx: typer.Context) -> None:
    """Train an agent. Arguments are Hydra overrides and flags.

    Examples: `rlrun train`, `rlrun train algo=ppo_clip env=CartPole-v1 algo.lr=1e-3`,
    `rlrun train -m seed=1,2,3` (a sweep), `rlrun train --cfg job` (print the config),
    `rlrun train resume=RUN_DIR` (continue an interrupted run), `rlrun train --help`.
    """
    global _job_started
    _job_started, SweepReport.sweep_dir, SweepReport.failed = False, None, 0  # fresh for each invocation
    if "--version" in ctx.args:
        _print_version()
        return
    from rlrun.algos import config_classes

    register_schemas(config_classes())
    try:
        args = _integral_floats(_resume_arguments(list(ctx.args)))
        args = _check_overrides(args)
    except RLRunError as err:
        _exit_with(err)
    sys.argv = [f"{sys.argv[0]} train", *args]
    try:
        _train_job()
        SweepReport.print_commands()
    except SystemExit as exit_:
        if exit_.code == 1 and not _job_started:
            raise SystemExit(2) from None  # Hydra refused the overrides or config; it said why
        SweepReport.print_commands()
        raise
    except ValueError as err:  # Hydra's check of its own flags, e.g. -m with --cfg
        if _job_started:
            raise
        _exit_with(RLRunError(str(err)))
    except KeyboardInterrupt as err:
        # The trainer has saved what it could and said so; exit like a killed process.
        raise SystemExit(128 + getattr(err, "signum", signal.SIGINT)) from None


@app.command("eval")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run directory (holds checkpoint.pt)."),
    episodes: int = typer.Option(10, min=1, help="Episodes to play."),
    seed: Optional[int] = typer.Option(None, help="Seed of the first episode (default: the seed of the run's own final evaluation)."),
    video: Optional[Path] = typer.Option(None, help="Record every episode as MP4 into this directory (needs `pip install 'rlrun\\[video]'`)."),
) -> None:
    """Evaluate a trained run deterministically with the configuration it was trained with."""
    from rlrun.evaluation import evaluate_run

    try:
        returns = evaluate_run(run_dir, episodes, seed, video)
    except RLRunError as err:
        _exit_with(err)
    Console().print(
        f"{run_dir}: return {returns.mean():.2f} ± {returns.std():.2f} over {returns.size} episodes "
        f"(min {returns.min():.2f}, max {returns.max():.2f})",
        highlight=False, soft_wrap=True,
    )
    if video is not None:
        Console().print(f"videos: {', '.join(sorted(str(p) for p in video.glob('*.mp4')))}", soft_wrap=True)


@app.command()
def plot(
    sweep_dir: Path = typer.Argument(..., help="A sweep (or any) directory holding runs."),
    group_by: str = typer.Option("algo", help="Config key whose value names a curve: algo, env, algo.lr, ..."),
    x: str = typer.Option("steps", help="x axis: steps or seconds."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG file to write (default: SWEEP_DIR/curves.png, with --profile SWEEP_DIR/profile.png)."),
    profile: bool = typer.Option(False, "--profile", help="Instead of curves, rliable's performance profiles of the final evaluation return: per group, the fraction of runs scoring above each return, with a 95% band."),
) -> None:
    """Plot mean training return and a 95% stratified-bootstrap band (rliable) across the
    runs of each group, or with --profile the groups' performance profiles.

    Titled with the environment id(s) and the sweep; one panel per environment when the runs
    span several (returns of different tasks are never averaged). A group's curve runs to the
    end of its longest run: solid where all its runs have data, dashed where only some do
    (the mean and band are then over the runs still going), and a note says where its runs
    end when they end more than 5% apart. Runs with damaged files are listed and left out;
    a profile leaves out the runs that did not complete, and lists them.
    """
    from rlrun import analysis

    output = sweep_dir / ("profile.png" if profile else "curves.png") if output is None else output
    try:
        if x not in ("steps", "seconds"):
            raise RLRunError(f"--x must be steps or seconds, got {x!r}.")
        groups = analysis.group_runs(_readable_runs(sweep_dir), group_by)
        sweep_name = "/".join(sweep_dir.resolve().parts[-2:])  # Hydra names sweeps <date>/<time>
        title = f"sweep {sweep_name}, by {group_by}"
        notes = analysis.plot_profile(groups, output, title) if profile else analysis.plot_curves(groups, x, output, title)
    except RLRunError as err:
        _exit_with(err)
    except ImportError as err:
        _exit_with(RLRunError(f"Plotting needs matplotlib and rliable ({err}): pip install 'rlrun[plot]'."))
    except OSError as err:
        _exit_with(RLRunError(f"Cannot write {output}: {err.strerror or err}."))
    for note in notes:
        stderr.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    Console().print(f"wrote {output} ({len(groups)} groups)", markup=False, highlight=False, soft_wrap=True)


@app.command()
def summary(
    sweep_dir: Path = typer.Argument(..., help="A sweep (or any) directory holding runs."),
    group_by: str = typer.Option("algo", help="Config key to group runs by."),
    threshold: Optional[float] = typer.Option(None, help="Return to reach (default: the environment's Gymnasium reward threshold)."),
    per_run: bool = typer.Option(False, "--runs", help="One row per run, best final evaluation return first, instead of one per group."),
) -> None:
    """Tabulate a sweep per group (or, with --runs, per run): final returns, time to a threshold.

    Per group: runs completed, final evaluation return (mean ± std and IQM over the completed
    runs), runs that reached the threshold, the median env steps and seconds until the last
    20 training episodes first averaged it, and the median CPU-seconds of a run. With --runs, per run, ranked by final
    evaluation return (runs that did not complete last): the values the sweep varied, final
    and recent training return, steps and seconds to the threshold, status and directory
    (listed below the table by rank when the terminal is too narrow for it). Below the
    table: failed runs with their error, dead runs (killed before they finished) and
    interrupted ones with the command that resumes them, the count still running, and for an
    Optuna sweep the best trial's run directory. Runs with damaged files are listed and left
    out.
    """
    from rlrun import analysis

    try:
        runs = _readable_runs(sweep_dir)
        groups = {} if per_run else analysis.group_runs(runs, group_by)
        threshold = analysis.default_threshold(runs) if threshold is None else threshold
        rows = analysis.run_rows(runs, threshold) if per_run else analysis.summary_rows(groups, threshold)
    except RLRunError as err:
        _exit_with(err)
    console = Console()
    if per_run:
        _print_run_table(console, sweep_dir, rows, threshold)
    else:
        console.print(_group_table(f"{sweep_dir} by {group_by}", rows, threshold))
    _print_unfinished(console, runs)
    _print_optuna_best(console, sweep_dir, runs)
    for name, group in groups.items():
        env_ids = sorted({str(run.info.get("env.id")) for run in group})
        if len(env_ids) > 1:
            stderr.print(f"note: group {escape(name)} mixes environments ({', '.join(env_ids)}); --group-by env.id separates them", highlight=False)


def _readable_runs(sweep_dir: Path) -> list:
    """The sweep's runs whose files can be read; each damaged one named in a note."""
    from rlrun import analysis

    runs = analysis.find_runs(sweep_dir)
    for run in runs:
        if run.damage:
            stderr.print(f"note: damaged: {run.path}: {run.damage}; left out", markup=False, highlight=False, soft_wrap=True)
    if all(run.damage for run in runs):
        raise RLRunError(f"Every run in {sweep_dir} has a damaged file (listed above): nothing to read.")
    return [run for run in runs if not run.damage]


def _threshold_caption(threshold: Optional[float]) -> str:
    if threshold is None:
        return "no threshold (--threshold R sets one)"
    return f"steps, secs: until the last 20 training episodes first averaged {threshold:g}"


def _group_table(title: str, rows: list[dict], threshold: Optional[float]):
    from rich.table import Table

    caption = f"final return: mean ± std over completed runs; {_threshold_caption(threshold)}; cpu s: median CPU-seconds of a run"
    table = Table(title=escape(title), caption=caption)
    table.add_column("group", overflow="fold")
    for column in ("done", "final return", "IQM", "reached", "steps", "secs", "cpu s"):
        table.add_column(column, justify="right", no_wrap=True)  # numbers are never split
    for row in rows:
        final = "-" if row["final_mean"] is None else f"{row['final_mean']:.1f} ± {row['final_std']:.1f}"
        table.add_row(
            escape(row["group"]), f"{row['completed']}/{row['runs']}", final, _number(row["final_iqm"], ".1f"),
            f"{row['reached']}/{row['runs']}", _number(row["steps_to_threshold"], ",.0f"), _number(row["seconds_to_threshold"], ".1f"),
            _number(row["cpu_seconds"], ".1f"),
        )
    return table


def _print_run_table(console: Console, sweep_dir: Path, rows: list[dict], threshold: Optional[float]) -> None:
    """The widest layout the terminal holds whole: run directories in the table, else listed
    whole below it by rank (a directory folded over lines is neither readable nor copyable);
    swept values a column each, else stacked in one column, so no number is ever split."""
    unlimited = console.options.update(max_width=10**6)
    for with_dirs, stacked in ((True, False), (False, False), (False, True)):
        table = _run_table(sweep_dir, rows, threshold, with_dirs, stacked)
        if console.measure(table, options=unlimited).maximum <= console.width:
            break
    console.print(table)
    if not with_dirs:
        for rank, row in enumerate(rows, 1):
            console.print(f"{rank:>3}  {row['run'].path}", markup=False, highlight=False, soft_wrap=True)


def _run_table(sweep_dir: Path, rows: list[dict], threshold: Optional[float], with_dirs: bool, stacked: bool):
    from rich.table import Table

    caption = f"final: evaluation return; recent: last 20 training episodes; {_threshold_caption(threshold)}"
    table = Table(title=escape(f"{sweep_dir}, runs by final return"), caption=caption)
    table.add_column("#", justify="right", no_wrap=True)
    keys = list(rows[0]["swept"])
    for header in keys if not stacked else ["swept"] if keys else []:
        table.add_column(escape(header), no_wrap=not stacked, overflow="fold")  # stacked: the last resort
    for column in ("final", "recent", "steps", "secs"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if with_dirs:
        table.add_column("run", no_wrap=True)
    for rank, row in enumerate(rows, 1):
        values = [escape(format(value, ".4g") if isinstance(value, float) else str(value)) for value in row["swept"].values()]
        swept = values if not stacked else ["\n".join(f"{key}={value}" for key, value in zip(keys, values))] if keys else []
        run_dir = [escape(str(row["run"].path.relative_to(sweep_dir)))] if with_dirs else []
        table.add_row(
            str(rank), *swept, _number(row["final"], ".1f"), _number(row["recent"], ".1f"), _number(row["steps_to_threshold"], ",.0f"),
            _number(row["seconds_to_threshold"], ".1f"), row["status"], *run_dir,
        )
    return table


def _number(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_unfinished(console: Console, runs: list) -> None:
    import shlex

    for run in runs:
        if run.status == "failed":
            error = " ".join(str(run.summary.get("error", "no error recorded")).split())
            console.print(f"failed: {run.path}: {error}", markup=False, highlight=False, soft_wrap=True)
        elif run.status in ("dead", "interrupted"):
            why = "killed before it finished" if run.status == "dead" else "stopped by a signal"
            resume = shlex.quote(f"resume={run.path}")
            console.print(f"{run.status}: {run.path} ({why}; `rlrun train {resume}` continues it)", markup=False, highlight=False, soft_wrap=True)
    running = sum(run.status == "running" for run in runs)
    if running:
        console.print(f"running: {running} run{'s' if running > 1 else ''}", highlight=False)


def _print_optuna_best(console: Console, sweep_dir: Path, runs: list) -> None:
    from rlrun import analysis

    try:
        best = analysis.optuna_best(sweep_dir, runs)
    except analysis.DamagedFile as err:
        stderr.print(f"note: damaged: {sweep_dir}: {err}; Optuna's best trial unknown", markup=False, highlight=False, soft_wrap=True)
        return
    if best is None:
        return
    value, params, matches = best
    if matches:
        console.print(f"Optuna's best trial ({value:g}): {', '.join(str(run.path) for run in matches)}", markup=False, highlight=False, soft_wrap=True)
        return
    settings = ", ".join(f"{key}={param}" for key, param in params.items())
    console.print(f"Optuna's best trial ({value:g}, {settings}): no run directory here matches it", markup=False, highlight=False, soft_wrap=True)


def _exit_with(err: RLRunError) -> None:
    stderr.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise SystemExit(err.exit_code)


class SweepReport(Callback):
    """Hydra callback (configs/config.yaml, hydra.callbacks): a sweep says where it writes, a
    failing job's error is shown when it fails, and the end gives the commands to read it."""

    sweep_dir: Path | None = None
    failed = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepReport.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        stderr.print(f"sweep dir {SweepReport.sweep_dir}", highlight=False, soft_wrap=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.FAILED and HydraConfig.get().mode == RunMode.MULTIRUN:
            SweepReport.failed += 1
            error = " ".join(str(job_return._return_value).split())
            stderr.print(f"[bold red]job {config.hydra.job.num} failed[/] ({escape(','.join(job_return.overrides))}): {escape(error)}", highlight=False, soft_wrap=True)

    @classmethod
    def print_commands(cls) -> None:
        if cls.sweep_dir is None:
            return
        failed = f" ({cls.failed} failed)" if cls.failed else ""
        Console().print(
            f"sweep done{failed}: {cls.sweep_dir}\n  rlrun summary {cls.sweep_dir}\n  rlrun summary {cls.sweep_dir} --runs\n"
            f"  rlrun plot {cls.sweep_dir}\n  tensorboard --logdir {cls.sweep_dir}",
            highlight=False, soft_wrap=True,
        )


def _resume_arguments(args: list[str]) -> list[str]:
    """`resume=DIR [total_timesteps=N]` -> the run's own overrides, continuing in DIR.

    Only the run's configuration is replayed from DIR/.hydra/overrides.yaml, and only plain
    `key=value` overrides of config keys: never `hydra.*` settings, `+`/`++`/`~` edits or
    `${...}` interpolations, which a run directory (possibly someone else's) could use to write
    files elsewhere or read the environment. The trainer checks the composed configuration
    against the checkpoint's. Hydra keeps its record of this invocation in
    DIR/.hydra/resume-<time>-<pid>, so the original .hydra/ stays as it was.
    """
    resume = [arg for arg in args if arg.startswith("resume=")]
    if not resume:
        return args
    run_dir = Path(resume[-1].removeprefix("resume=")).resolve()
    others = [arg for arg in args if not arg.startswith("resume=")]
    if any(not arg.startswith("total_timesteps=") for arg in others):
        raise RLRunError(
            "`rlrun train resume=RUN_DIR` continues a run with its saved configuration; the only "
            f"other argument it takes is total_timesteps=N (to train longer), got: {' '.join(others)}."
        )
    saved = [o for o in _saved_overrides(run_dir) if not o.startswith(("resume=", "total_timesteps="))]
    total = others or _saved_total(run_dir)
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{os.getpid()}"
    return [
        *saved, *total, f"resume={_quoted(run_dir)}", f"hydra.run.dir={_quoted(run_dir)}",
        f"hydra.output_subdir=.hydra/resume-{stamp}",
    ]


def _saved_overrides(run_dir: Path) -> list[str]:
    """The run's original command-line overrides, each checked to be a plain config override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise RLRunError(f"Cannot resume {run_dir}: it is not an rlrun run directory (no {overrides_file}).")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(overrides_file))
        assert isinstance(saved, list) and all(isinstance(o, str) for o in saved)
        parsed = OverridesParser.create().parse_overrides(saved)
    except Exception as err:
        raise RLRunError(f"Cannot resume {run_dir}: {overrides_file} is damaged ({type(err).__name__}: {err}).") from None
    for text, override in zip(saved, parsed):
        if override.type != OverrideType.CHANGE or override.key_or_group.startswith("hydra") or override.package or "${" in text:
            raise RLRunError(
                f"Cannot resume {run_dir}: its {overrides_file} holds {text!r}, which is not a plain "
                "`key=value` config override; resume replays only those (never hydra.* settings, "
                "+/++/~ edits or ${...} interpolations). Nothing was run."
            )
    return saved


def _saved_total(run_dir: Path) -> list[str]:
    """total_timesteps as the newest checkpoint has it (an earlier resume may have extended it)."""
    from rlrun.checkpoint import load_checkpoint

    if not any((run_dir / name).exists() for name in ("checkpoint.pt", "checkpoint.prev.pt")):
        return []
    return [f"total_timesteps={int(load_checkpoint(run_dir)['config']['total_timesteps'])}"]


def _integral_floats(args: list[str]) -> list[str]:
    """`total_timesteps=1e5` -> `total_timesteps=100000`: scientific notation of a whole number
    is read as the integer (a float key takes it as well)."""

    def integral(match: re.Match) -> str:
        value = float(match.group(0))
        return str(int(value)) if value.is_integer() and abs(value) < 2**63 else match.group(0)

    return [re.sub(r"(?<=[=,])\d+(\.\d*)?[eE]\+?\d+(?=,|$)", integral, arg) if "=" in arg and not arg.startswith("-") else arg for arg in args]


def _quoted(path: Path) -> str:
    """A path as a quoted Hydra override value (run directories contain '=' and ',')."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


# Plugin configs rlrun documents -> (module that provides them, rlrun extra that installs it).
PLUGINS = {
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "ray"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
}
CHECKED_GROUPS = ("algo", "env", "tuned", "hparams_search")
GROUPS = CHECKED_GROUPS + ("hydra/launcher", "hydra/sweeper")


def _check_plugin(group: str, value: str) -> None:
    key = ("hydra/sweeper", "optuna") if group == "hparams_search" else (group, value)  # searches use Optuna
    if key not in PLUGINS:
        return
    module, extra = PLUGINS[key]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # not even the hydra_plugins namespace package is installed
        found = False
    if not found:
        raise RLRunError(f"{group}={value} needs a Hydra plugin that is not installed: pip install 'rlrun[{extra}]'.")


def _check_overrides(args: list[str]) -> list[str]:
    """Refuse before Hydra runs anything: overrides that do not parse; unknown `algo=`/`env=`
    choices (sweeps included) with the close matches; launchers or sweepers whose plugin is
    missing, with the pip command; keys no schema has; a `hydra.run.dir` that holds a run.
    Returns `args`, plus, for a sweep, the setting that names job directories by the swept
    keys only."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [arg for arg in args if ("=" in arg or arg.startswith("~")) and not arg.startswith("-")]
    parser = OverridesParser.create()
    overrides = []
    for arg in candidates:
        try:
            overrides += parser.parse_overrides([arg])
        except Exception as err:
            raise RLRunError(f"Cannot read the override {arg!r}: {' '.join(str(err).split())}") from None
        if not overrides[-1].key_or_group:
            raise RLRunError(f"The override {arg!r} names no key; write key=value, e.g. algo.lr=1e-3.")
    algos = _chosen_algos(overrides)
    _check_room(Path.cwd())
    from rlrun.algos import config_classes
    from rlrun.config import check_known_key, check_value

    algo_configs = config_classes()
    for override in overrides:
        group = override.key_or_group
        if group.startswith("hydra") and group not in ("hydra/launcher", "hydra/sweeper"):
            _check_run_dir(override, args)
            continue
        if override.is_delete() and group not in ("tuned", "hparams_search"):
            raise RLRunError(f"`~{group}` would remove what every run reads; give it a value instead ({group}=...).")
        values = _values(override)
        if values is None or override.package is not None or override.is_delete():
            continue
        if group in GROUPS:
            _check_choices(group, values)
        elif "/" not in group:
            for algo in (name for name in algos if name in algo_configs):  # an unknown algo= is refused by its own check
                check_known_key(group, algo_configs[algo], algo_configs)
                for value in values:
                    check_value(group, _typed(value), algo_configs[algo])
    if "-m" in args or "--multirun" in args:
        constant = sorted({o.key_or_group for o in overrides if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")})
        args = [*args, f"hydra.job.config.override_dirname.exclude_keys=[{','.join(constant)}]"]
    return args


def _values(override) -> list[str] | None:
    """An override's values (each of a sweep), or None where a sweeper expands them later."""
    try:
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    except Exception:
        return None  # interval(), glob() and the like
    if override.key_or_group in GROUPS and not all(value is None or isinstance(value, str) for value in values):
        raise RLRunError(f"{override.key_or_group} takes the name of a config file, got {override.get_value_string()!r}.")
    return [str(value) if value is not None else None for value in values]


def _typed(value: str | None) -> object:
    """An override's value as YAML reads it (what Hydra does with it before the schema)."""
    try:
        return yaml.safe_load(value) if value is not None else None
    except yaml.YAMLError:
        return value


def _chosen_algos(overrides: list) -> list[str]:
    for override in overrides:
        if override.key_or_group == "algo" and not override.is_delete():
            values = _values(override)
            if values and None not in values:
                return values
    defaults = OmegaConf.load(files("rlrun.configs").joinpath("config.yaml")).defaults
    return [next(entry["algo"] for entry in defaults if isinstance(entry, DictConfig) and "algo" in entry)]


def _check_choices(group: str, values: list[str | None]) -> None:
    if None in values:
        raise RLRunError(f"{group}=null is not an option; to drop a group from the defaults write ~{group}.")
    for value in values:
        _check_plugin(group, value)
    if group not in CHECKED_GROUPS:
        return
    options = sorted(p.name.removesuffix(".yaml") for p in files("rlrun.configs").joinpath(group).iterdir() if p.name.endswith(".yaml"))
    for value in values:
        if value not in options:
            close = difflib.get_close_matches(value, options, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            extra = " Any registered Gymnasium id runs with generic defaults as env=generic env.id=<id>." if group == "env" else ""
            raise RLRunError(f"Unknown {group} {value!r}.{hint} Available: {', '.join(options)}.{extra}")


MIN_FREE_BYTES = 64 << 10  # less than this and Hydra's own first files would not fit


def _check_room(path: Path) -> None:
    """Refuse a path no file system can hold, and a disk with no room for a run's first files."""
    if any(len(part.encode()) > 255 for part in path.parts) or len(str(path).encode()) > 4000:
        raise RLRunError(f"The directory name {str(path)[:80]}... is too long for the file system (255 bytes a name).")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise DiskFullRefusal(f"The disk holding {existing} is full ({free:,} bytes free); free some space, then run again. Nothing was written.")


class DiskFullRefusal(RLRunError):
    exit_code = 1  # 2 is kept for refused configurations


def _check_run_dir(override, args: list[str]) -> None:
    """A new run never writes into a directory that already holds one (resume continues one)."""
    if override.key_or_group in ("hydra.run.dir", "hydra.sweep.dir"):
        _check_room(Path(str(override.value())).resolve())
    if override.key_or_group != "hydra.run.dir" or any(arg.startswith("resume=") for arg in args):
        return
    run_dir = Path(str(override.value())).resolve()
    if (run_dir / ".hydra").exists() or (run_dir / "summary.json").exists():
        raise RLRunError(
            f"{run_dir} already holds a run; rlrun never writes a new run over another. Continue it "
            f"with `rlrun train resume={run_dir}`, or choose a new hydra.run.dir."
        )
    if not run_dir.exists():
        _new_run_dirs.add(run_dir)


def _new_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`... : the first that no other run has, created here. mkdir
    is atomic, so processes started in the same second still get a directory each."""
    base = Path(path)
    _new_parents.update(parent.resolve() for parent in base.parents if not parent.exists())
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")
    _new_run_dirs.add(candidate.resolve())
    return str(candidate)


def _job_name(overrides: ListConfig, exclude_keys: ListConfig) -> str:
    """A sweep job's directory name: its swept `key=value` pairs, numbers to 4 significant digits."""

    def short(value: str) -> str:
        try:
            number = float(value)
        except ValueError:
            return value
        return value if number.is_integer() else f"{number:.4g}"

    pairs = [o.partition("=") for o in overrides]
    name = ",".join(f"{key}={short(value)}" for key, _, value in pairs if key.lstrip("+~") not in exclude_keys) or "run"
    if len(name.encode()) > 200:  # file names end at 255 bytes; the job number and a digest fit
        name = f"{name.encode()[:180].decode(errors='ignore')}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


# use_cache: Hydra resolves these more than once per run, and copies the cache to each job.
OmegaConf.register_new_resolver("rlrun.new_dir", _new_dir, use_cache=True)
OmegaConf.register_new_resolver("rlrun.job_name", _job_name, use_cache=True)
OmegaConf.register_new_resolver("rlrun.preset_note", lambda tuned: _preset_note(tuned))


def _preset(tuned: str | None) -> str:
    """The preset file of a `tuned` choice, or "none" where the pair has none (or `~tuned`)."""
    path = f"tuned/{tuned}.yaml"
    return f"configs/{path}" if tuned and files("rlrun.configs").joinpath(path).is_file() else "none"


def _preset_note(tuned: str) -> str:
    preset = _preset(tuned)
    if preset != "none":
        return f"Applied here: {preset} (its values replace the algorithm's defaults shown elsewhere)."
    return f"No preset applied ({tuned}): the algorithm's and the environment's own values."


def main() -> None:
    app()


if __name__ == "__main__":
    main()
