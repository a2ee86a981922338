"""The `rlrun` command: a thin Typer front end that hands `train` overrides to Hydra.

Training logic lives in `rlrun.trainer`; this module parses, dispatches and turns user errors
(`RLRunError`) into one clean paragraph and an exit code: 2 for a configuration Hydra or
rlrun refuses, 1 for a run that failed, 128 + signal for an interrupted one.
"""

from __future__ import annotations

import gc
import signal
import sys
from pathlib import Path
from typing import Optional

import hydra
import typer
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from rlrun import __version__, launch
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
        chosen = {"algo": choices.algo, "env": choices.env, "preset": launch.preset(choices.get("tuned"))}
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return train(cfg, run_dir, signals, chosen, continue_run=multirun)
        except RunInterrupted:
            signals.hand_over()  # a cluster's warning: its handler requeues the job (the checkpoint is written)
            raise
        except RLRunError as err:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # Hydra reports it, marks this job failed and runs the sweep's other jobs
            if err.exit_code == 2 and run_dir.resolve() in launch.new_run_dirs:
                launch.remove_new_run_dir(run_dir)
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
    global _job_started
    _job_started, launch.SweepReport.sweep_dir, launch.SweepReport.failed = False, None, 0  # fresh for each invocation
    if "--version" in ctx.args:
        _print_version()
        return
    from rlrun.algos import config_classes

    register_schemas(config_classes())
    try:
        args = launch.solved_targets(launch.integral_floats(launch.resume_arguments(list(ctx.args))))
        args = launch.check_overrides(args)
    except RLRunError as err:
        _exit_with(err)
    sys.argv = [f"{sys.argv[0]} train", *args]
    try:
        _train_job()
        launch.SweepReport.print_commands()
    except SystemExit as exit_:
        if exit_.code == 1 and not (_job_started or launch.SweepReport.sweep_dir is not None):  # a sweep's jobs may run in other processes
            raise SystemExit(2) from None  # Hydra refused the overrides or config; it said why
        launch.SweepReport.print_commands()
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
    stochastic: bool = typer.Option(False, "--stochastic", help="Sample actions from the policy instead of taking the most likely one."),
) -> None:
    """Evaluate a trained run with the configuration it was trained with: the policy's most
    likely actions (deterministic), or with --stochastic actions sampled from it, as in training."""
    from rlrun.evaluation import evaluate_run

    try:
        returns = evaluate_run(run_dir, episodes, seed, video, stochastic)
    except RLRunError as err:
        _exit_with(err)
    Console().print(
        f"{run_dir}: {'stochastic' if stochastic else 'deterministic'} return {returns.mean():.2f} ± {returns.std():.2f} over {returns.size} episodes "
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
    threshold: Optional[float] = typer.Option(None, help="Return to reach (default: the environment's env.solved_return)."),
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


@app.command()
def compare(
    paths: list[Path] = typer.Argument(..., metavar="SWEEP_OR_GROUP", help="Directories of runs: each one group, or with --by (and for a single directory) pooled and grouped by a key."),
    by: Optional[str] = typer.Option(None, "--by", "--group-by", help="Config key whose values are the groups: algo, env.id, algo.lr, ... (default for a single directory: algo)."),
    metric: str = typer.Option("eval", help="eval: final evaluation return; recent: last 20 training episodes; auc: mean training return over the steps every run trained; steps, seconds: until --threshold (fewer is better)."),
    threshold: Optional[float] = typer.Option(None, help="Return for --metric steps|seconds (default: the environment's env.solved_return)."),
    reference: Optional[str] = typer.Option(None, help="Place each group beside published PPO returns: cleanrl or rl-zoo3."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON, for scripts."),
    force: bool = typer.Option(False, "--force", help="Compare groups of different environments anyway."),
    resamples: int = typer.Option(2000, min=100, help="Bootstrap resamples per confidence interval."),
) -> None:
    """Is A better than B? The statistics the field asks for, from rliable and scipy.stats.

    Per group: finished runs, mean, median and IQM of --metric, each with a 95%
    stratified-bootstrap confidence interval (rliable), and the median CPU-seconds of a run.
    Per pair of groups: the probability of improvement P(A>B) with its CI, Welch's t-test and
    the Mann-Whitney U test (Holm-adjusted over the pairs), Cohen's d, and the seeds per group
    that would give 80% power to detect the observed difference; then a verdict in words.
    Runs running, failed or killed are listed and left out; groups of different environments
    are refused unless --force.
    """
    from rlrun import analysis

    try:
        groups, label = _compare_groups(paths, by)
        if threshold is None and metric in analysis.LOWER_IS_BETTER:
            threshold = analysis.default_threshold([run for runs in groups.values() for run in runs])
        result = analysis.compare_groups(groups, metric, threshold, resamples, force, reference)
    except RLRunError as err:
        _exit_with(err)
    if as_json:
        import json

        print(json.dumps(analysis.json_safe(result), indent=2))
        return
    _print_comparison(Console(), result, label)


def _compare_groups(paths: list[Path], by: Optional[str]) -> tuple[dict[str, list], str]:
    """Each directory a group, or all runs grouped by `by`; and how, in words."""
    from rlrun import analysis

    if by is None and len(paths) > 1:
        if len(set(map(str, paths))) < len(paths):
            raise RLRunError("The same directory is given twice: each directory is a group of its own.")
        return {str(path): _readable_runs(path) for path in paths}, "by directory"
    runs = [run for path in paths for run in _readable_runs(path)]
    return analysis.group_runs(runs, by or "algo"), f"by {by or 'algo'}"


def _print_comparison(console: Console, result: dict, label: str) -> None:
    envs = ", ".join(dict.fromkeys(row["env"] for row in result["groups"]))
    better = "higher" if result["higher_is_better"] else "lower"
    console.print(f"{escape(envs)}, {escape(label)}: {result['measure']}; {better} is better", highlight=False, soft_wrap=True)
    console.print(_stats_table(result))
    if result["pairs"]:
        console.print(_pairs_table(result))
    if result["reference"]:
        console.print(_reference_table(result))
    for entry in result["left_out"]:
        error = f": {' '.join(str(entry['error']).split())}" if entry["error"] else ""
        console.print(f"left out ({entry['status']}{error}): {entry['run']}", markup=False, highlight=False, soft_wrap=True)
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for pair in result["pairs"]:
        console.print(pair["verdict"], markup=False, highlight=False, soft_wrap=True)


def _metric_format(result: dict) -> str:
    return {"steps": ",.0f", "seconds": ".2f"}.get(result["metric"], ".1f")


def _with_ci(value: Optional[float], ci: Optional[list], spec: str) -> str:
    """The value, and its interval below it: narrow columns, so the table fits 80 columns."""
    if value is None:
        return "-"
    return format(value, spec) + ("" if ci is None else f"\n[{ci[0]:{spec}}, {ci[1]:{spec}}]")


def _numbers_table(caption: str, first: str, columns: tuple[str, ...]):
    """A table of a name column that folds and number columns that never wrap."""
    from rich.table import Table

    table = Table(caption=caption)
    table.add_column(first, overflow="fold")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    return table


def _stats_table(result: dict):
    spec = _metric_format(result)
    caption = (f"runs: finished/all; [95% CI]: stratified bootstrap over runs (rliable, {result['resamples']:,} resamples); "
               "IQM: interquartile mean; cpu s: median CPU-seconds of a run")
    table = _numbers_table(caption, "group", ("runs", "mean", "median", "IQM", "cpu s"))
    for row in result["groups"]:
        table.add_row(
            escape(row["group"]), f"{row['n']}/{row['runs']}", *(_with_ci(row[name], row[f"{name}_ci"], spec) for name in ("mean", "median", "iqm")),
            _number(row["cpu_seconds"], ".1f"),
        )
    return table


def _pairs_table(result: dict):
    pairs = len(result["pairs"])
    caption = (f"P(A>B): chance that a run of A beats a run of B{' (fewer ' + result['metric'] + ')' if not result['higher_is_better'] else ''}, "
               f"ties half, [95% CI]; p: two-sided, Holm-adjusted over {pairs} pair{'s' * (pairs > 1)}; d: Cohen's d; "
               f"seeds: per group for {result['power']:.0%} power at this d")
    table = _numbers_table(caption, "A vs B", ("P(A>B)", "Welch p", "MWU p", "d", "seeds"))
    for pair in result["pairs"]:
        table.add_row(
            escape(f"{pair['a']} vs {pair['b']}"), _with_ci(pair["probability_of_improvement"], pair["probability_of_improvement_ci"], ".2f"),
            _number(pair.get("p_welch_holm"), ".3g"), _number(pair.get("p_mann_whitney_holm"), ".3g"), _number(pair["cohens_d"], ".2f"),
            _number(pair["seeds_for_power"], ","),
        )
    return table


def _reference_table(result: dict):
    from rich.table import Table

    reference, spec = result["reference"], _metric_format(result)
    caption = (f"published: {reference['measure']}, mean ± {reference['spread']}; here: {result['measure']}. "
               f"Source: {reference['source']}")
    table = Table(title=escape(f"beside {reference['name']}"), caption=escape(caption))
    table.add_column("group", overflow="fold")
    table.add_column("mean [95% CI]", justify="right", no_wrap=True)
    table.add_column("published", justify="right", no_wrap=True)
    table.add_column("notes", overflow="fold")
    for row in reference["rows"]:
        published = row["published"]
        shown = "-" if published is None else f"{published['mean']:g} ± {published['spread']:g}\n{published['env']}, {published['steps']:,} steps"
        notes = [row["position"]] if row.get("position") else []
        table.add_row(escape(row["group"]), _with_ci(row["mean"], row["mean_ci"], spec), shown, escape("; ".join(notes + row["notes"]) or "-"))
    return table


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
