"""Ray start-up and the environment of Ray workers: one module that jobs, actors, the Serve
application and Tune trials all import (none of them imports another for it).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger("policylm")

# Variables that Ray workers get from the driver's environment when it sets them (a cluster's
# workers do not inherit the driver's environment): offline mode and caches of Hugging Face,
# policylm's model cache, and the keys of http:// and openai:// policies.
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_ENDPOINT", "HF_TOKEN",
              "POLICYLM_CACHE", "POLICYLM_API_KEY", "OPENAI_API_KEY")


def runtime_env() -> dict[str, Any]:
    """The one place the environment of Ray workers is declared. ``working_dir`` is added by
    ``ray job submit --working-dir``; workers inherit the installed packages of the cluster
    image. A hub model (``hf://<org>/<model>``) downloads on the workers unless the user's own
    environment says ``HF_HUB_OFFLINE=1``."""
    return {"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                         "PYTHONWARNINGS": "ignore::DeprecationWarning",
                         **{k: os.environ[k] for k in PASSED_ENV if k in os.environ}}}


def passive_openmp() -> bool:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) in a
    process whose torch threads share the cores with other busy processes (and in the Ray
    workers it starts afterwards): spinning threads hold the cores the others need. OpenMP
    reads the policy once, when torch is imported, so this works only before; returns whether
    the policy is in force (one the user set is kept)."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` when set (a cluster, or inside ``ray job submit``), else start
    local Ray. Does nothing if Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"runtime_env": runtime_env(), "log_to_driver": True}
    if address:
        log.info("connecting to Ray at %s", address)
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def alive_nodes() -> list[dict]:
    """The cluster's live nodes (``NodeID``, ``NodeManagerAddress``, ...)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _probe(path: str) -> Any:
    """What a node sees at ``path``: a file's size, a directory's entries, or None."""
    if os.path.isfile(path):
        return ["file", os.path.getsize(path)]
    if os.path.isdir(path):
        return ["dir", sorted(os.listdir(path))]
    return None


def check_visible(paths: list[tuple[str, str]]) -> None:
    """On a cluster of more than one node, a :class:`~policylm.platform.config.ConfigError`
    naming the key of the first local path that some node does not see as this process does
    (absent, or other contents: a node-local disk). URIs (``s3://``, ``gs://``...) and
    single-node clusters pass."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from policylm.platform.config import ConfigError

    local = [(k, os.path.abspath(p)) for k, p in paths if p and "://" not in p]
    nodes = alive_nodes() if local else []
    if len(nodes) < 2:
        return
    probe = ray.remote(num_cpus=0)(_probe)
    for key, path in local:
        want = _probe(path)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(path) for n in nodes]
        seen = ray.get(refs, timeout=120)
        blind = [f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})"
                 for n, got in zip(nodes, seen, strict=True) if got != want]
        if blind:
            raise ConfigError(
                f"{key}={path} is on this node's disk only: node(s) {', '.join(blind)} cannot "
                f"see it. A run on {len(nodes)} nodes needs it on storage every node reads: a "
                "shared file system (NFS) mounted at the same path on every node, or a URI "
                "such as s3://bucket/prefix where the key takes one")


def check_shared_dir(path: str, key: str) -> None:
    """:func:`check_visible` for a directory the run will write (Ray Train's storage): a
    marker written here must be seen by every node."""
    import uuid

    if "://" in path:
        return
    os.makedirs(path, exist_ok=True)
    marker = os.path.join(path, f".policylm-visible-{uuid.uuid4().hex[:8]}")
    with open(marker, "w") as f:
        f.write("every node of the run must see this file\n")
    from policylm.platform.config import ConfigError

    try:
        check_visible([(key, marker)])
    except ConfigError as err:  # name the directory, not the marker
        raise ConfigError(str(err).replace(marker, os.path.abspath(path))) from None
    finally:
        os.remove(marker)
