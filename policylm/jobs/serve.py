"""Serve an LLM policy over HTTP with Ray Serve (the application is in policylm.serve.app).

Usage: ``policylm serve policy="hf://smollm2-135m?adapter=runs/sft/adapter"`` (or ``python -m
policylm.jobs.serve ...``); ``--config configs/serve_cartpole.yaml`` takes the same keys. On a
cluster, ``serve deploy configs/serve_cartpole.yaml`` deploys the same application. Runs until
Ctrl-C or SIGTERM (``kill``), then shuts Serve and Ray down and exits 0 (``block=false`` returns
once the replicas are up, for a cluster given by RAY_ADDRESS).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from policylm.jobkit.runs import log, run_job
from policylm.serve.app import ServeConfig, start


def main(cfg: ServeConfig) -> dict:
    stop = None
    if cfg.block:
        from policylm.runtime import init_ray

        init_ray()  # first, so that the handlers below replace the ones Ray installs
        stop = stop_event()  # before start: a Ctrl-C during start-up counts
    url = start(cfg)
    log.info("policy served at %s (API schema: %s/docs; health: %s/v1/health)", url, url, url)
    print(f"policylm serve: {cfg.policy} on {cfg.env_id} at {url}", flush=True)
    if stop is not None:
        while not stop.wait(1.0):
            pass
        log.info("stopping the policy server")
        import ray

        if os.environ.get("RAY_ADDRESS"):  # a cluster outlives this driver: stop the app
            from ray import serve

            serve.shutdown()
        # local Ray goes down with the app; `kill %1` has signalled its processes too, so
        # serve.shutdown() would wait 30 s for a controller that is gone
        ray.shutdown()
        print("policylm serve: stopped", flush=True)
    return {"url": url}


def stop_event() -> Any:
    """An event set by SIGINT (Ctrl-C) or SIGTERM. Installed after Ray starts: its driver
    replaces Python's SIGINT behaviour (a KeyboardInterrupt never reaches a waiting loop) and
    answers SIGTERM with a crash report (``*** SIGTERM received ... PC: @``) and exit code 134;
    with these, a stop is a clean shutdown and exit code 0."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


CONFIG = ServeConfig
QUIET = False  # a server's messages are its console (it has no run directory to log into)
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("serve", ServeConfig, main, sys.argv[1:], quiet=QUIET)
