"""The policylm command: fast help, unknown commands, config errors."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policylm.cli import JOBS, main

BIN = Path(sys.executable).parent / "policylm"


def test_help_is_fast_and_lists_every_job():
    subprocess.run([str(BIN), "--help"], check=True, capture_output=True)  # warm the disk cache
    t0 = time.perf_counter()
    out = subprocess.run([str(BIN), "--help"], check=True, capture_output=True, text=True)
    assert time.perf_counter() - t0 < 2.0
    for name in JOBS:
        assert name in out.stdout


def test_help_imports_nothing_heavy():
    code = ("import sys; from policylm.cli import main; main(['--help']); "
            "print(sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip().endswith("[]")


def test_every_job_module_has_config_and_main():
    import importlib

    for module in JOBS.values():
        job = importlib.import_module(f"policylm.jobs.{module}")
        assert job.CONFIG.__doc__ and job.main.__code__.co_argcount == 1  # main(cfg)
        assert job.run is job.main
    from policylm import jobs

    assert sorted(JOBS.values()) == sorted(jobs.MODULES)  # the Python API has every command
    assert all(name == module.replace("_", "-") for name, module in JOBS.items())


def test_help_says_which_uris_run_code(capsys):
    """python:, pytorch:// (class=file.py), rllib:// (pickled checkpoints) and eval_fn import and
    run what they name: --help says to use them only with inputs you trust."""
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    said = text[text.index("run code"):]
    for uri in ("python:", "pytorch://", "class=", "rllib://", "pickle", "eval_fn="):
        assert uri in said, uri
    assert "trust" in said


def test_unknown_command_and_bad_config(capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["collect", "episodes_per_policy=0"])
    assert exc.value.code == 2
    assert "episodes_per_policy: must be >= 1" in capsys.readouterr().err


def test_help_config_lists_keys(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build-dataset", "--help-config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "where" in out and "validation_fraction" in out


@pytest.mark.parametrize(("args", "says"), [
    (["build-dataset", "trajectories={tmp}/none", "stats_only=true"],
     "no such trajectory file or directory"),  # a bad path
    (["collect", "env_id=LunarLander-v3", "num_workers=0", "out={tmp}/ll"],
     "gymnasium[box2d]"),  # an env package that is not installed
    (["evaluate", "policy=http://127.0.0.1:9?wait=0.5", "num_workers=0", "episodes=1",
      "out={tmp}/ev"], "is the server running"),  # a server that does not answer
])
def test_expected_failures_print_one_error_line(tmp_path, args, says):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True)
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert out.returncode == 1 and len(errors) == 1 and says in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    verbose = subprocess.run([str(BIN), *args, "--verbose"], capture_output=True, text=True)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_config_keys_work_as_flags():
    from policylm.jobkit.runs import flag_overrides, parse_args
    from policylm.serve.app import ServeConfig

    argv = ["--policy", "hf://m?x=1", "--max-batch-size=4", "--config", "c.yaml", "port=9000",
            "--block"]
    assert flag_overrides(argv) == ["policy=hf://m?x=1", "max_batch_size=4", "--config",
                                    "c.yaml", "port=9000", "block=true"]
    cfg = parse_args("serve", ServeConfig, ["--policy", "hf://m", "--port", "9001"])
    assert (cfg.policy, cfg.port) == ("hf://m", 9001)


def test_workers_get_the_users_hub_settings_and_no_others(monkeypatch):
    from policylm.runtime import runtime_env

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("POLICYLM_CACHE", "/shared/cache")
    env = runtime_env()["env_vars"]
    assert "HF_HUB_OFFLINE" not in env  # a cluster may pull hf://<org>/<model>
    assert env["POLICYLM_CACHE"] == "/shared/cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runtime_env()["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_async_grpo_sets_passive_openmp_before_torch_loads(tmp_path):
    """``policylm grpo-episodes max_staleness=1`` reaches the job with torch not
    yet imported, so the job's OMP_WAIT_POLICY=PASSIVE takes effect (and reaches the Ray
    workers it starts); after torch is imported the policy cannot be set and says so."""
    code = f"""
import os, sys
import policylm.jobs.grpo_episodes as episodes
from policylm.runtime import passive_openmp
def job(cfg):
    print("torch loaded:", "torch" in sys.modules, "policy:", passive_openmp(),
          os.environ.get("OMP_WAIT_POLICY"))
    import torch
    del os.environ["OMP_WAIT_POLICY"]
    print("after torch:", passive_openmp(), os.environ.get("OMP_WAIT_POLICY"))
    os.environ["OMP_WAIT_POLICY"] = "active"
    print("user's:", passive_openmp(), os.environ["OMP_WAIT_POLICY"])
    return {{}}
episodes.main = job
from policylm.cli import main
main(["grpo-episodes", "max_staleness=1", "out={tmp_path / 'run'}", "--verbose"])
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert "torch loaded: False policy: True PASSIVE" in out
    assert "after torch: False None" in out and "user's: False active" in out
