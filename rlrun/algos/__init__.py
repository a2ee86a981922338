"""The algorithms: every module of this package is imported, and each `Algorithm` subclass
with a `name` registers itself in `ALGORITHMS` (see `rlrun.algos.base` for the contract).

"The tutorial" and its equation numbers, here and in the modules, are Zhe Li's "RL Intro:
From Policy Gradient to PPO"; docs/algorithms.md writes out every equation used.
"""

from __future__ import annotations

import importlib
import pkgutil

from rlrun.algos.base import ALGORITHMS, Algorithm

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def algorithm_class(config: object) -> type[Algorithm]:
    """The algorithm whose `config_class` `config` is an instance of."""
    return next(cls for cls in ALGORITHMS.values() if type(config) is cls.config_class)


def config_classes() -> dict[str, type]:
    """`algo=` choice -> the dataclass that types its yaml."""
    return {name: cls.config_class for name, cls in sorted(ALGORITHMS.items())}
