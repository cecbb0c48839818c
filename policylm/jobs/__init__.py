"""The jobs, one module each: ``python -m policylm.jobs.<module>``, ``policylm <command>``, and
the same from Python. Every job module has its config class (``CONFIG``, a dataclass whose
fields are the command's keys) and ``run(config) -> dict`` (what the command returns: the run
directory and its figures)::

    from policylm import jobs

    cfg = jobs.collect.CollectConfig(episodes_per_policy=4, num_workers=0, out="runs/c")
    result = jobs.collect.run(cfg)

Modules load on first use, so ``import policylm.jobs`` stays cheap. Errors are raised, not
printed: bad input raises the errors of ``policylm.platform.errors.USER_ERRORS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = ("bc_ppo", "benchmark", "build_dataset", "collect", "compare", "control", "demo",
           "evaluate",
           "export_minari", "filter", "grpo", "grpo_episodes", "import_minari", "merge",
           "self_improve", "serve", "sft", "sweep", "train_experts", "train_suite")


def __getattr__(name: str) -> ModuleType:
    if name in MODULES:
        return importlib.import_module(f"policylm.jobs.{name}")
    raise AttributeError(f"module 'policylm.jobs' has no attribute {name!r}; jobs: {MODULES}")


def __dir__() -> list[str]:
    return sorted([*globals(), *MODULES])
