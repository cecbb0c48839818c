"""A real two-node Ray cluster on loopback (a head, and a second node with its own temp dir and
resources, started in a private mount namespace where one directory of the head is not
visible), `ray job submit` of a real job whose actors land on both nodes, a 2-worker SFT with
one worker per node that resumes after a worker is killed, node-local paths refused by name, and
the cluster launcher config checked against Ray's own schema."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ports import free_ports

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def node_ports() -> list[str]:
    """Every port of its own: the test session's local Ray holds the defaults."""
    flags = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port")
    return [f"--{flag}={port}" for flag, port in zip(flags, free_ports(len(flags)), strict=True)]


def can_unshare() -> bool:
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True)
    return probe.returncode == 0


class TwoNodes:
    """Head and second node; ``head_only`` is a directory the second node cannot see."""

    def __init__(self, root: Path):
        self.root, self.procs, self.logs = root, [], []
        self.gcs, self.dash, client = free_ports(3)
        self.address = f"127.0.0.1:{self.gcs}"
        self.head_only = root / "head-only"
        self.head_only.mkdir()
        (self.head_only / "marker").write_text("on the head's disk only\n")
        self.masked = can_unshare()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)
        # short temp dirs: Ray's unix socket paths must stay under ~107 characters
        self.temps = [tempfile.mkdtemp(prefix="rayh", dir="/tmp"),
                      tempfile.mkdtemp(prefix="rayw", dir="/tmp")]
        ray = str(BIN / "ray")
        self._start("head", [ray, "start", "--head", "--block", f"--port={self.gcs}",
                             "--num-cpus=2", "--resources={\"head\": 1}",
                             "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={self.dash}", f"--temp-dir={self.temps[0]}",
                             "--min-worker-port=20000", "--max-worker-port=20999",
                             f"--ray-client-server-port={client}",
                             "--disable-usage-stats", *node_ports()])
        self.wait_for_nodes(1)
        worker = [ray, "start", "--block", f"--address={self.address}", "--num-cpus=2",
                  "--resources={\"worker\": 1}", "--node-ip-address=127.0.0.1",
                  f"--temp-dir={self.temps[1]}", "--min-worker-port=21000",
                  "--max-worker-port=21999", "--disable-usage-stats", *node_ports()]
        if self.masked:  # the second node's view: an empty tmpfs over the head-only directory
            script = f"mount -t tmpfs tmpfs {self.head_only} && exec " + " ".join(
                f"'{a}'" for a in worker)
            worker = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        self._start("worker", worker)
        self.wait_for_nodes(2)

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 (closed in stop)
        self.logs.append(log)
        # --block keeps a node's processes in this process group, so stopping it cannot touch
        # the test session's own local Ray (which `ray stop` would kill too)
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def wait_for_nodes(self, n: int) -> None:
        code = ("import ray; ray.init(address='auto', logging_level='ERROR'); "
                "print(sum(x['Alive'] for x in ray.nodes()))")
        for _ in range(90):
            for p in self.procs:
                assert p.poll() is None, self.log_tail()
            probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   env={**self.env, "RAY_ADDRESS": self.address})
            if probe.returncode == 0 and probe.stdout.strip().splitlines()[-1] == str(n):
                return
            time.sleep(1)
        raise AssertionError(f"{n} nodes did not come up\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join((self.root / f"{n}.log").read_text()[-2000:]
                         for n in ("head", "worker") if (self.root / f"{n}.log").is_file())

    def run(self, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
        """A policylm job as a driver connected to the cluster."""
        return subprocess.run([str(BIN / "policylm"), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root,
                              env={**self.env, "RAY_ADDRESS": self.address})

    def stop(self) -> None:
        # every process of a node is in its process group (start_new_session): a SIGKILL ends
        # them all at once (`ray start --block` takes a minute or more to stop on SIGTERM)
        for p in reversed(self.procs):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        for log in self.logs:
            log.close()
        for t in self.temps:
            shutil.rmtree(t, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    nodes = TwoNodes(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


def test_job_submit_spreads_rollout_actors_over_both_nodes(two_nodes, tmp_path):
    address = f"http://127.0.0.1:{two_nodes.dash}"
    out = tmp_path / "submitted"
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir",
              str(ROOT), "--", "python", "-m", "policylm.jobs.collect", "--config",
              "configs/collect_cartpole.yaml", "episodes_per_policy=4", "num_workers=2",
              "chunk_size=2", f"out={out}"]
    for _ in range(30):  # the job agent may come up a little after the job server
        proc = subprocess.run(submit, env=two_nodes.env, capture_output=True, text=True,
                              timeout=600)
        if "No available agent" not in proc.stderr + proc.stdout:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["episodes"] == 4 * len(meta["policies"])
    assert len({w["node_id"] for w in meta["workers"]}) == 2  # one actor on each node
    # every chunk reached the driver's run directory, whichever node played it
    assert len(list((out / "trajectories").glob("*.parquet"))) == 2 * len(meta["policies"])


def test_sft_one_worker_per_node_resumes_after_a_kill(two_nodes, small_dataset, tiny_model_dir,
                                                      tmp_path):
    out = tmp_path / "sft"
    proc = two_nodes.run(["sft", f"dataset={small_dataset}", f"model={tiny_model_dir}",
                          "train.num_workers=2", "train.cpus_per_worker=1",
                          "train.placement=STRICT_SPREAD",
                          "max_steps=4", "batch_size=8", "save_steps=1", "eval_steps=0",
                          "logging_steps=1", "kill_at_step=2", "train.max_failures=2", "dtype=fp32",
                          "lora.rank=4", f"out={out}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len({w["node_id"] for w in metrics["workers"]}) == 2
    assert metrics["attempts"] == 2 and metrics["resumed"]
    assert [s for s, _ in metrics["train_loss"]][-1] == 4
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert '"fault": "killed at step 2"' in (out / "train_notes.jsonl").read_text()


def test_node_local_paths_are_refused_by_name(two_nodes, small_dataset, tiny_model_dir,
                                              tmp_path):
    if not two_nodes.masked:
        pytest.skip("unshare -m is not permitted here: both nodes see every directory")
    proc = two_nodes.run(["sft", f"dataset={small_dataset}", f"model={tiny_model_dir}",
                          "train.num_workers=2", "max_steps=1",
                          f"train.storage_path={two_nodes.head_only / 'ray_results'}",
                          f"out={tmp_path / 'sft'}"])
    assert proc.returncode == 1
    assert "train.storage_path" in proc.stderr and "cannot see it" in proc.stderr
    assert "Traceback" not in proc.stderr
    from policylm.platform.policies.network import build_mlp, save_mlp_policy

    save_mlp_policy(two_nodes.head_only / "policy.pt", build_mlp(4, 2, [8]), 4, 2, [8])
    proc = two_nodes.run(["collect", "num_workers=2", "episodes_per_policy=1",
                          f"policies=[{{skill: a, uri: 'file://{two_nodes.head_only}/policy.pt'}}]",
                          f"out={tmp_path / 'collect'}"])
    assert proc.returncode == 1 and "cannot see it" in proc.stderr


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
    assert "-c constraints-gpu.txt" in setup and "vllm]" in setup
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    pins = dict(line.split("==") for line in (ROOT / "constraints-gpu.txt").read_text()
                .splitlines() if "==" in line and not line.startswith("#"))
    assert pins["vllm"] and pins["torch"]  # vLLM with the CUDA torch it was built against


def test_gpu_check_says_why_it_cannot_run_here():
    import shutil as sh

    if sh.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"],
                                                 capture_output=True).returncode == 0:
        pytest.skip("a GPU is here: bench/gpu_check.sh would run for real (10 minutes)")
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert json.loads(proc.stdout.splitlines()[-1])["error"].startswith("no CUDA GPU")
