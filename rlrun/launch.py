"""Between the shell and Hydra: what `rlrun train` checks before Hydra runs anything, the
arguments a resume replays, the resolvers that name run directories, and the callback that
reports on a sweep."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import os
import re
import shutil
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from rlrun.errors import RLRunError

stderr = Console(stderr=True)
new_run_dirs: set[Path] = set()  # run directories this process created (a refusal removes them)
_new_parents: set[Path] = set()  # and the directories it made to hold them


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
        from rlrun.checkpoint import read_summary

        # Jobs that ran in other processes (joblib, batched, cluster launchers) said so there.
        count = max(cls.failed, sum(read_summary(path.parent).get("status") == "failed" for path in cls.sweep_dir.glob("*/summary.json")))
        failed = f" ({count} failed)" if count else ""
        Console().print(
            f"sweep done{failed}: {cls.sweep_dir}\n  rlrun summary {cls.sweep_dir}\n  rlrun summary {cls.sweep_dir} --runs\n"
            f"  rlrun plot {cls.sweep_dir}\n  rlrun compare {cls.sweep_dir} --by <swept key>\n  tensorboard --logdir {cls.sweep_dir}",
            highlight=False, soft_wrap=True,
        )


def resume_arguments(args: list[str]) -> list[str]:
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
    from rlrun.checkpoint import has_checkpoint, load_checkpoint

    if not has_checkpoint(run_dir):
        return []
    return [f"total_timesteps={int(load_checkpoint(run_dir)['config']['total_timesteps'])}"]


def integral_floats(args: list[str]) -> list[str]:
    """`total_timesteps=1e5` -> `total_timesteps=100000`: scientific notation of a whole number
    is read as the integer (a float key takes it as well)."""

    def integral(match: re.Match) -> str:
        value = float(match.group(0))
        return str(int(value)) if value.is_integer() and abs(value) < 2**63 else match.group(0)

    return [re.sub(r"(?<=[=,])\d+(\.\d*)?[eE]\+?\d+(?=,|$)", integral, arg) if "=" in arg and not arg.startswith("-") else arg for arg in args]


def solved_targets(args: list[str]) -> list[str]:
    """`target_return=solved` (a sweep's value too) -> each job's own env.solved_return, read
    when its config resolves (rlrun.config.solved_return)."""
    return [re.sub(r"(?<=[=,])solved(?=,|$)", "${rlrun.solved_return:}", arg) if arg.startswith("target_return=") else arg for arg in args]


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
    ("hydra/launcher", "ray_cluster"): ("hydra_plugins.hydra_ray_launcher", "ray"),
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


def check_overrides(args: list[str]) -> list[str]:
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
        launchers = [value for o in overrides if o.key_or_group == "hydra/launcher" for value in (_values(o) or [])]
        if "ray_cluster" in launchers and not os.environ.get("RAY_ADDRESS"):
            raise RLRunError(
                "hydra/launcher=ray_cluster runs the sweep on a running Ray cluster, named by RAY_ADDRESS: "
                "export RAY_ADDRESS=ray://HEAD:10001 (the head node's Ray client port), and where the cluster uses "
                "token authentication RAY_AUTH_MODE=token and its token (README, \"Clusters\"). Nothing was run."
            )
        if "batched" in launchers:
            from rlrun.batched_launcher import check_options

            check_options({o.key_or_group.removeprefix("hydra.launcher."): o.value() for o in overrides if o.key_or_group.startswith("hydra.launcher.") and not o.is_sweep_override()})
        constant = sorted({o.key_or_group for o in overrides if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")})
        # Beside the other overrides (argparse wants them together), not last: a flag may end the line.
        first = next((i for i, arg in enumerate(args) if arg in candidates), len(args))
        args = [*args[:first], f"hydra.job.config.override_dirname.exclude_keys=[{','.join(constant)}]", *args[first:]]
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
        new_run_dirs.add(run_dir)


def new_dir(path: str) -> str:
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
    new_run_dirs.add(candidate.resolve())
    return str(candidate)


def job_name(overrides: ListConfig, exclude_keys: ListConfig) -> str:
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
OmegaConf.register_new_resolver("rlrun.new_dir", new_dir, use_cache=True)
OmegaConf.register_new_resolver("rlrun.job_name", job_name, use_cache=True)
OmegaConf.register_new_resolver("rlrun.preset_note", lambda tuned: _preset_note(tuned))  # defined below


def preset(tuned: str | None) -> str:
    """The preset file of a `tuned` choice, or "none" where the pair has none (or `~tuned`)."""
    path = f"tuned/{tuned}.yaml"
    return f"configs/{path}" if tuned and files("rlrun.configs").joinpath(path).is_file() else "none"


def _preset_note(tuned: str) -> str:
    applied = preset(tuned)
    if applied != "none":
        return f"Applied here: {applied} (its values replace the algorithm's defaults shown elsewhere)."
    return f"No preset applied ({tuned}): the algorithm's and the environment's own values."


def remove_new_run_dir(run_dir: Path) -> None:
    """Refused before training: leave no run behind, nor the directories made to hold it."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in sorted(_new_parents, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if empty
