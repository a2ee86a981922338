"""The `rlrun` command: a thin Typer front end that hands `train` overrides to Hydra.

Training logic lives in `rlrun.trainer`; this module parses, dispatches and turns user errors
(`RLRunError`) into one clean paragraph and a non-zero exit.
"""

from __future__ import annotations

import sys

import hydra
import typer
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console

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


@app.callback()
def _commands() -> None:
    """Keeps `train` a subcommand (Typer flattens single-command apps)."""


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def _train_job(cfg: DictConfig) -> float:
    """One Hydra job: train in the job's run directory, return the final evaluation return."""
    from rlrun.trainer import train  # torch loads only when something trains

    try:
        return train(cfg, HydraConfig.get().runtime.output_dir)
    except RLRunError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra reports it, marks this job failed and runs the sweep's other jobs
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        raise SystemExit(err.exit_code) from None


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
    `rlrun train --help` (config groups and every key).
    """
    sys.argv = [f"{sys.argv[0]} train", *ctx.args]
    try:
        _train_job()
    except KeyboardInterrupt:
        # The trainer has already saved its checkpoint and an "interrupted" summary.
        Console(stderr=True).print("[bold yellow]interrupted[/]")
        raise SystemExit(130) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
