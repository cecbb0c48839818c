"""Ray start-up and the environment of Ray workers: one module that jobs, actors, the Serve
application and Tune trials all import (none of them imports another for it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("policylm")

# The one place the environment of Ray workers is declared. ``working_dir`` is added by
# ``ray job submit --working-dir``; workers inherit the installed packages of the cluster image.
RUNTIME_ENV: dict[str, Any] = {
    "env_vars": {
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
}


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` when set (a cluster, or inside ``ray job submit``), else start
    local Ray. Does nothing if Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"runtime_env": RUNTIME_ENV, "log_to_driver": True}
    if address:
        log.info("connecting to Ray at %s", address)
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
