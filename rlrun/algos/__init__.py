"""The algorithms, keyed by the config class that selects them (one yaml in configs/algo/ each)."""

from __future__ import annotations

from rlrun.algos.base import Algorithm
from rlrun.algos.pg import PG, PGBaseline
from rlrun.algos.ppo import PPOKL, PPOClip
from rlrun.config import PGBaselineConfig, PGConfig, PPOClipConfig, PPOKLConfig

ALGORITHMS: dict[type, type[Algorithm]] = {
    PGConfig: PG,
    PGBaselineConfig: PGBaseline,
    PPOKLConfig: PPOKL,
    PPOClipConfig: PPOClip,
}


def algorithm_class(config: object) -> type[Algorithm]:
    return ALGORITHMS[type(config)]
