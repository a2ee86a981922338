"""Which jobs of a sweep one process can train together (the batched launcher's groups).

Jobs batch when their configurations differ only in values the batched engine keeps per run
(`BATCHABLE_KEYS`): everything else, the algorithm itself included, must be equal.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

from rlrun.config import flatten

BATCHABLE_KEYS = (
    "seed", "target_return", "algo.lr", "algo.clip_eps", "algo.ent_coef", "algo.vf_coef", "algo.gamma",
    "algo.gae_lambda", "algo.kl_target", "algo.target_kl", "algo.max_grad_norm", "algo.beta_init",
    "algo.beta_min", "algo.beta_max",
)
# Keys whose null is just another value per run; for the others null changes what is computed
# (no GAE, no KL target...), so null and non-null runs are grouped apart.
NULL_BATCHABLE_KEYS = frozenset({"seed", "target_return", "algo.target_kl", "algo.max_grad_norm"})


def group_key(cfg: DictConfig) -> str:
    """What jobs of one group share: the resolved config without its `hydra` node and without
    the batchable values (for most of them, only whether they are null), plus the algorithm's
    config class. A job that resumes a run (`resume` set) keeps every value: it batches with
    nothing. Raises OmegaConf's error when `cfg` does not resolve."""
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    values = flatten(OmegaConf.to_container(task, resolve=True, enum_to_str=True))
    if values.get("resume") is None:
        for key in BATCHABLE_KEYS:
            if key in values:
                value = values.pop(key)
                if key not in NULL_BATCHABLE_KEYS:
                    values[key] = value is None
    algo = OmegaConf.get_type(cfg, "algo")
    values["algo"] = f"{algo.__module__}.{algo.__qualname__}"  # two algorithms may share every key
    return json.dumps(values, sort_keys=True)


def group_jobs(keys: list[str], max_group_size: int) -> list[list[int]]:
    """The jobs' indices grouped by equal key, groups in order of first appearance, each split
    into chunks of at most `max_group_size`."""
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    return [jobs[i:i + max_group_size] for jobs in by_key.values() for i in range(0, len(jobs), max_group_size)]


def spread(groups: list[list[int]], workers: int) -> list[list[int]]:
    """Halve the largest groups until there are `workers` of them (or none has two jobs left):
    fewer groups than workers would leave cores idle, and a group costs less per run only up
    to the point where its process has the core to itself."""
    groups = [list(group) for group in groups]
    while len(groups) < workers:
        largest = max(range(len(groups)), key=lambda i: len(groups[i]))
        if len(groups[largest]) < 2:
            break
        group = groups.pop(largest)
        half = (len(group) + 1) // 2
        groups[largest:largest] = [group[:half], group[half:]]
    return groups


def swept_values(job_overrides: list[list[str]]) -> list[dict[str, str]]:
    """Per job, its `key: value` overrides of the keys the sweep gives more than one value."""
    jobs = [dict(override.partition("=")[::2] for override in overrides) for overrides in job_overrides]
    keys = dict.fromkeys(key for job in jobs for key in job)
    swept = [key for key in keys if len({job.get(key) for job in jobs}) > 1]
    return [{key: job[key] for key in swept if key in job} for job in jobs]


def group_values(swept: list[dict[str, str]]) -> str:
    """A group's swept values (`swept_values` of its jobs), e.g. "algo=ppo_clip seed=1,2,3"."""
    keys = dict.fromkeys(key for job in swept for key in job)
    return " ".join(f"{key}={','.join(dict.fromkeys(job[key] for job in swept if key in job))}" for key in keys)


def describe(groups: list[list[int]], swept: list[dict[str, str]]) -> str:
    """The grouping in words, e.g. "6 jobs in 2 groups of 3 (split by algo)": the split keys are
    the swept keys with one value within each group."""
    sizes = [len(group) for group in groups]
    of = str(sizes[0]) if len(set(sizes)) == 1 else ", ".join(map(str, sizes))
    keys = dict.fromkeys(key for job in swept for key in job)
    split = [key for key in keys if all(len({swept[i].get(key) for i in group}) == 1 for group in groups)]
    plural = "s" if len(groups) > 1 else ""
    return f"{sum(sizes)} jobs in {len(groups)} group{plural} of {of}" + (f" (split by {', '.join(split)})" if split else "")
