"""The `rlrun` command: a thin Typer front end that hands `train` overrides to Hydra.

Training logic lives in `rlrun.trainer`; this module parses, dispatches and turns user errors
(`RLRunError`) into one clean paragraph and an exit code: 2 for a configuration Hydra or
rlrun refuses, 1 for a run that failed, 128 + signal for an interrupted one.
"""

from __future__ import annotations

import difflib
import gc
import importlib.util
import signal
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Optional

import hydra
import typer
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

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
register_schemas()
stderr = Console(stderr=True)
_job_started = False  # whether Hydra got as far as running a job


@app.callback()
def _commands() -> None:
    """Keeps `train` a subcommand (Typer flattens single-command apps)."""


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def _train_job(cfg: DictConfig) -> float:
    """One Hydra job: train in the job's run directory, return the final evaluation return."""
    global _job_started
    _job_started = True
    from rlrun.trainer import train  # torch loads only when something trains

    if not gc.get_freeze_count():
        # The hundreds of thousands of objects torch's import made live as long as the
        # process: leave them out of every garbage collection, including the one at exit
        # (0.3 s). Only once: in a sweep, a later freeze would also pin the earlier jobs'
        # garbage for good.
        gc.freeze()
    try:
        return train(cfg, HydraConfig.get().runtime.output_dir)
    except RLRunError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra reports it, marks this job failed and runs the sweep's other jobs
        _exit_with(err)


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
    try:
        args = _resume_arguments(list(ctx.args))
        _check_group_choices(args)
    except RLRunError as err:
        _exit_with(err)
    sys.argv = [f"{sys.argv[0]} train", *args]
    try:
        _train_job()
    except SystemExit as exit_:
        if exit_.code == 1 and not _job_started:
            raise SystemExit(2) from None  # Hydra refused the overrides or config; it said why
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
    video: Optional[Path] = typer.Option(None, help="Record every episode as MP4 into this directory (needs `pip install 'rlrun[video]'`)."),
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
    output: Path = typer.Option(Path("curves.png"), "-o", "--output", help="PNG file to write."),
) -> None:
    """Plot mean training return and a 95% bootstrap band across the runs of each group."""
    from rlrun import analysis

    try:
        if x not in ("steps", "seconds"):
            raise RLRunError(f"--x must be steps or seconds, got {x!r}.")
        groups = analysis.group_runs(analysis.find_runs(sweep_dir), group_by)
        notes = analysis.plot_curves(groups, x, output, title=f"{sweep_dir.name} by {group_by}")
    except RLRunError as err:
        _exit_with(err)
    except ImportError as err:
        _exit_with(RLRunError(f"Plotting needs matplotlib ({err}): pip install 'rlrun[plot]'."))
    for note in notes:
        stderr.print(f"note: {escape(note)}", highlight=False)
    Console().print(f"wrote {output} ({len(groups)} groups)", highlight=False)


@app.command()
def summary(
    sweep_dir: Path = typer.Argument(..., help="A sweep (or any) directory holding runs."),
    group_by: str = typer.Option("algo", help="Config key to group runs by."),
    threshold: Optional[float] = typer.Option(None, help="Return to reach (default: the environment's Gymnasium reward threshold)."),
) -> None:
    """Tabulate a sweep per group: final returns, time to a threshold, failed runs.

    Per group: final evaluation return (mean, std and IQM over the completed runs), env steps
    and seconds until the last 20 training episodes averaged the threshold (median over the
    runs that reached it), failed and still-running runs.
    """
    from rich.table import Table

    from rlrun import analysis

    try:
        runs = analysis.find_runs(sweep_dir)
        groups = analysis.group_runs(runs, group_by)
    except RLRunError as err:
        _exit_with(err)
    threshold = analysis.default_threshold(runs) if threshold is None else threshold
    table = Table(title=f"{sweep_dir} by {group_by}" + (f", threshold {threshold:g}" if threshold is not None else ""))
    for column in ("group", "runs", "final return", "IQM", "reached", "steps to threshold", "s to threshold", "failed", "running"):
        table.add_column(column, justify="left" if column in ("group", "failed") else "right")
    number = lambda value, spec: "-" if value is None else format(value, spec)  # noqa: E731
    for row in analysis.summary_rows(groups, threshold):
        final = "-" if row["final_mean"] is None else f"{row['final_mean']:.1f} ± {row['final_std']:.1f} (n={row['completed']})"
        table.add_row(
            row["group"], str(row["runs"]), final, number(row["final_iqm"], ".1f"),
            f"{row['reached']}/{row['runs']}", number(row["steps_to_threshold"], ",.0f"),
            number(row["seconds_to_threshold"], ".1f"), ", ".join(row["failed"]) or "-", str(row["running"]),
        )
    Console(width=200).print(table)
    for name, group in groups.items():
        env_ids = sorted({str(run.info.get("env.id")) for run in group})
        if len(env_ids) > 1:
            stderr.print(f"note: group {escape(name)} mixes environments ({', '.join(env_ids)}); --group-by env.id separates them", highlight=False)


def _exit_with(err: RLRunError) -> None:
    stderr.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise SystemExit(err.exit_code)


def _resume_arguments(args: list[str]) -> list[str]:
    """`resume=DIR [total_timesteps=N]` -> the run's own overrides, continuing in DIR.

    Hydra then composes exactly the saved configuration (the trainer checks it against the
    checkpoint), writes into DIR, and keeps its record of this invocation in
    DIR/.hydra/resume-<time> so the original .hydra/ stays as it was.
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
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise RLRunError(f"Cannot resume {run_dir}: it is not an rlrun run directory (no {overrides_file}).")
    # The newest resume's overrides carry any total_timesteps an earlier resume extended to.
    newest = max([overrides_file, *run_dir.glob(".hydra/resume-*/overrides.yaml")], key=lambda f: f.parent.name)
    saved = [
        o for o in OmegaConf.load(newest)
        if not o.startswith("resume=") and not (others and o.startswith("total_timesteps="))
    ]
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return [
        *saved, *others, f"resume={_quoted(run_dir)}", f"hydra.run.dir={_quoted(run_dir)}",
        f"hydra.output_subdir=.hydra/resume-{stamp}",
    ]


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


def _check_plugin(group: str, value: str) -> None:
    key = ("hydra/sweeper", "optuna") if group == "hparams_search" else (group, value)  # searches use Optuna
    if key not in PLUGINS:
        return
    module, extra = PLUGINS[key]
    if importlib.util.find_spec(module) is None:
        raise RLRunError(f"{group}={value} needs a Hydra plugin that is not installed: pip install 'rlrun[{extra}]'.")


def _check_group_choices(args: list[str]) -> None:
    """Refuse unknown `algo=`/`env=` choices (sweeps included) with the close matches, and
    launchers or sweepers whose plugin is missing with the pip command that installs it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [arg for arg in args if "=" in arg and not arg.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:
        return  # not parseable: Hydra will say why
    for override in overrides:
        group = override.key_or_group
        if group not in CHECKED_GROUPS + ("hydra/launcher", "hydra/sweeper") or override.package is not None or override.is_delete():
            continue
        try:
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:
            continue  # interval(), glob() and the like: Hydra or the sweeper expands them
        if None in values:
            raise RLRunError(f"{group}=null is not an option; to drop a group from the defaults write ~{group}.")
        values = [str(value) for value in values]
        for value in values:
            _check_plugin(group, value)
        if group not in CHECKED_GROUPS:
            continue
        options = sorted(p.name.removesuffix(".yaml") for p in files("rlrun.configs").joinpath(group).iterdir() if p.name.endswith(".yaml"))
        for value in values:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=3)
                hint = f" Did you mean {' or '.join(close)}?" if close else ""
                extra = " Any registered Gymnasium id runs with generic defaults as env=generic env.id=<id>." if group == "env" else ""
                raise RLRunError(f"Unknown {group} {value!r}.{hint} Available: {', '.join(options)}.{extra}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
