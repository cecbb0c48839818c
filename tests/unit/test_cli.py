"""The policylm command: fast help, unknown commands, config errors."""

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

    for module, _ in JOBS.values():
        job = importlib.import_module(f"policylm.jobs.{module}")
        assert job.CONFIG.__doc__ and job.main.__code__.co_argcount == 1  # main(cfg)


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


def test_bad_input_error_has_no_traceback(tmp_path):
    out = subprocess.run(
        [str(BIN), "build-dataset", f"trajectories={tmp_path}/none", "stats_only=true"],
        capture_output=True, text=True)
    assert out.returncode == 1
    assert "error:" in out.stderr and "no such trajectory file or directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_keys_work_as_flags():
    from policylm.jobs.common import flag_overrides, parse_args
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
