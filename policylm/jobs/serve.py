"""Serve an LLM policy over HTTP with Ray Serve (the app in ``policylm.serve.app``).

Usage: ``policylm serve policy="hf://smollm2-135m?adapter=runs/sft/adapter"`` (or ``python -m
policylm.jobs.serve ...``); ``--config configs/serve_cartpole.yaml`` takes the same keys. On a
cluster, ``serve deploy configs/serve_cartpole.yaml`` deploys the same application. Runs until
Ctrl-C (``block=false`` returns once the replicas are up, for a cluster given by RAY_ADDRESS).
"""

from __future__ import annotations

import sys

from policylm.jobs.common import log, run_job
from policylm.serve.app import ServeConfig, start


def main(cfg: ServeConfig) -> dict:
    url = start(cfg)
    log.info("policy served at %s (API schema: %s/docs; health: %s/v1/health)", url, url, url)
    print(f"policylm serve: {cfg.policy} on {cfg.env_id} at {url}", flush=True)
    if cfg.block:
        import time

        from ray import serve

        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("stopping the policy server")
            serve.shutdown()
    return {"url": url}


CONFIG = ServeConfig

if __name__ == "__main__":
    run_job("serve", ServeConfig, main, sys.argv[1:])
