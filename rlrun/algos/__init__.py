"""The algorithms, keyed by the config class that selects them (one yaml in configs/algo/ each)."""

from __future__ import annotations

from rlrun.algos.base import Algorithm
from rlrun.algos.ppo import PPOClip
from rlrun.config import PPOClipConfig

ALGORITHMS: dict[type, type[Algorithm]] = {
    PPOClipConfig: PPOClip,
}


def algorithm_class(config: object) -> type[Algorithm]:
    return ALGORITHMS[type(config)]
