"""``policylm serve`` as a user runs it (README quickstart: the command with its flags, started
in the background, stopped with ``kill %1``): it answers on /v1/health, says once that it has
no API key, and SIGTERM to its process group stops it with exit code 0 and no crash report
(Ray's ``*** SIGTERM received ... PC: @`` frames). Ctrl-C (SIGINT) reaches the same stop: see
``test_serve_stops_on_ctrl_c_and_sigterm`` in the unit tests."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_ports

pytestmark = pytest.mark.integration


def test_serve_stops_cleanly_on_sigterm(tiny_model_dir, tmp_path):
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("POLICYLM_API_KEY", "RAY_ADDRESS")}
    log = tmp_path / "serve.log"
    # its own session, like a shell job: the signal goes to the whole group, as `kill %1` does
    with log.open("ab") as sink:  # append: the child's writes never land where we read
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "policylm"), "serve",
             "--policy", f"hf://{tiny_model_dir}?temperature=0&dtype=fp32", "--port", str(port),
             "--num-cpus", "0.25", "episode_ttl_s=60"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"the server exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the server never answered:\n{log.read_text()}"
            try:  # up, and past start-up (health answers before the app is declared ready)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5):
                    if f"at http://127.0.0.1:{port}" in log.read_text():
                        break
            except OSError:
                pass
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    assert rc == 0, out
    assert "SIGTERM received" not in out and "PC: @" not in out, out
    assert sum("no API key" in line for line in out.splitlines()) == 1, out
    assert "policylm serve: stopped" in out, out
