"""Cluster submission: a local Ray head on loopback, `ray job submit` of a real job, and the
cluster launcher config checked against Ray's own schema."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_against_a_running_head(tmp_path):
    gcs, dash = free_port(), free_port()
    # every port of its own: the test session's local Ray already holds the default agent,
    # metrics and client ports, and a second head's agent would fail to bind them
    ports = [f"--dashboard-agent-listen-port={free_port()}",
             f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--ray-client-server-port={free_port()}"]
    # the head (and so the job's `python`) uses this venv, as a cluster image would
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    # a short temp dir: Ray's unix socket paths must stay under ~107 characters
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 (closed in finally)
    # --block keeps the head's processes under this process group, so stopping it cannot touch
    # the test session's own local Ray (which `ray stop` would kill too)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats", *ports],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    out = tmp_path / "submitted"
    try:
        address = f"http://127.0.0.1:{dash}"
        for _ in range(60):  # the job server comes up with the dashboard
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                                   env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(2)
        submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir",
                  str(ROOT), "--", "python", "-m", "policylm.jobs.collect", "--config",
                  "configs/collect_cartpole.yaml", "episodes_per_policy=2", "num_workers=1",
                  f"out={out}"]
        for _ in range(30):  # the job agent may come up a little after the job server
            proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600)
            if "No available agent" not in proc.stderr + proc.stdout:
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "succeeded" in proc.stdout + proc.stderr
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["episodes"] == 4
        assert (out / "config.yaml").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_cluster_yaml_passes_rays_schema():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` does; raises on a violation
    broken = {**config, "max_workers": "many"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    workers = config["available_node_types"]
    gpu = [n for n in workers.values() if n.get("resources", {}).get("GPU")]
    assert gpu and all(n["max_workers"] >= n["min_workers"] for n in workers.values())
    setup = " ".join(config["setup_commands"])
    assert "[vllm" in setup or "vllm]" in setup
