"""Load on the policy endpoint: concurrent clients on loopback against the batched deployment and
the same deployment with batch size 1, with the embedded SmolLM2-135M; and, in the same run, the
service's own in-process throughput at batch 1 and at the deployment's batch size.

On this CPU batching a 135M model gains only 2-3x, so the honest figure is how much of that gain
the endpoint keeps: ``ratio`` = (batched / unbatched endpoint throughput) / (in-process batch-N /
batch-1 throughput), target >= 0.8. ``endpoint_vs_engine`` is the batched endpoint's throughput
as a fraction of the in-process batched throughput, target >= 0.7. Every request must succeed: a
failed request fails the bench (exit 1), as does a missed target.
Run: .venv/bin/python bench/serve_load.py [--clients 32 --requests 8 --batch 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import finish

PORT = 18651


def observations(n: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return rng.uniform([-2, -2, -0.2, -2], [2, 2, 0.2, 2], size=(n, 4)).round(3).tolist()


def load(clients: int, per_client: int, obs: list[list[float]]) -> dict:
    """``clients`` threads, each with a keep-alive connection, sending ``per_client`` act
    requests of one observation; throughput (requests/s), latency percentiles, failures."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        for i in range(per_client):
            body = json.dumps({"observations": [obs[(k * per_client + i) % len(obs)]],
                               "steps": [i]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/act", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and len(json.loads(data)["actions"]) == 1
            except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
                ok, data = False, str(err).encode()
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if not ok:
                    failures.append(data[:200].decode(errors="replace"))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "failed": len(failures),
            "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "first_failure":
            failures[0] if failures else None}


def in_process(policy: str, batch: int, obs: list[list[float]], repeats: int) -> float:
    """Observations per second through the service itself (no HTTP, no Serve), ``batch``
    single-observation requests per call: the median of ``repeats`` timed rounds."""
    from policylm.platform.serving import ActRequest, PolicyService

    service = PolicyService(policy)
    reqs = [ActRequest(observations=[o], steps=[i]) for i, o in enumerate(obs)]
    service.act(reqs[:batch])  # warm-up (prefix cache, allocator)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = 0
        for lo in range(0, len(reqs), batch):
            done += len(service.act(reqs[lo: lo + batch]))
        rates.append(done / (time.perf_counter() - t0))
    return float(statistics.median(rates))


def endpoint(policy: str, batch: int, threads: int, clients: int, per_client: int,
             obs: list[list[float]]) -> dict:
    from ray import serve

    from policylm.serve.app import ServeConfig, start

    start(ServeConfig(policy=policy, port=PORT, max_batch_size=batch, num_cpus=1,
                      torch_threads=threads, max_ongoing_requests=max(64, 2 * clients),
                      batch_wait_timeout_s=0.01, block=False))
    load(min(clients, 8), 2, obs)  # warm-up
    out = load(clients, per_client, obs)
    serve.delete("policylm")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the replica")
    args = parser.parse_args()
    import ray
    import torch

    from policylm.platform.engines.models import resolve_model

    resolve_model(args.model)
    policy = f"hf://{args.model}?temperature=0"
    obs = observations(args.clients * args.requests)
    torch.set_num_threads(args.threads)  # as the replica will
    engine_1 = in_process(policy, 1, obs[:64], 3)
    engine_n = in_process(policy, args.batch, obs[: 4 * args.batch], 3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    batched = endpoint(policy, args.batch, args.threads, args.clients, args.requests, obs)
    unbatched = endpoint(policy, 1, args.threads, args.clients, args.requests, obs)
    ray.shutdown()
    endpoint_gain = batched["throughput_rps"] / unbatched["throughput_rps"]
    engine_gain = engine_n / engine_1
    finish("serve_load", ("endpoint throughput gain from batching", endpoint_gain),
           ("in-process gain from batching", engine_gain), target=0.8,
           checks={"endpoint_vs_engine": (batched["throughput_rps"] / engine_n, 0.7)},
           limits={"failed_requests": (batched["failed"] + unbatched["failed"], 0)},
           model=args.model, clients=args.clients, requests=args.clients * args.requests,
           max_batch_size=args.batch, batched=batched, unbatched=unbatched,
           engine_batch1_obs_per_s=round(engine_1, 2),
           engine_batchN_obs_per_s=round(engine_n, 2))


if __name__ == "__main__":
    main()
