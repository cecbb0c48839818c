"""Ray Tune sweeps on local Ray with the tiny model: a target-return sweep and a training sweep
(SFT + evaluation per trial, ASHA on validation loss) write their tables and best configs; a
sweep killed mid-way resumes without rerunning its finished trials."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from policylm.jobs.sweep import SweepConfig, main
from policylm.platform.config import ConfigError, config_from_dict

pytestmark = pytest.mark.integration


def tiny_policy(model_dir):
    return f"hf://{model_dir}?temperature=1&dtype=fp32"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_target_sweep_writes_table_curve_and_best_config(ray_local, tiny_model_dir, tmp_path):
    from policylm.jobs.evaluate import EvaluateConfig
    from policylm.platform.policies import split_uri

    cfg = config_from_dict(SweepConfig, {
        "kind": "target", "policy": tiny_policy(tiny_model_dir),
        "space": {"target_return": [10, 50, 200]}, "episodes": 2, "out": str(tmp_path / "s")})
    result = main(cfg)
    assert (result["trials"], result["finished"]) == (3, 3)
    rows = read_csv(tmp_path / "s" / "results.csv")
    means = [float(r["mean_return"]) for r in rows]
    assert means == sorted(means, reverse=True)  # sorted by the objective, best first
    assert sorted(float(r["target_return"]) for r in rows) == [10, 50, 200]
    assert len(result["curve"]) == 3
    for name in ("results.md", "objective.png", "target_vs_actual.png", "report.md"):
        assert (tmp_path / "s" / name).is_file(), name
    best = yaml.safe_load((tmp_path / "s" / "best_config.yaml").read_text())
    evaluate = config_from_dict(EvaluateConfig, best)  # ready to run
    assert float(split_uri(evaluate.policy)[2]["target_return"]) == float(rows[0]["target_return"])
    with pytest.raises(ConfigError, match="already holds files"):
        main(cfg)


def test_training_sweep_with_asha(small_dataset, tiny_model_dir, tmp_path):
    from policylm.jobs.sft import SftJobConfig

    cfg = config_from_dict(SweepConfig, {
        "kind": "train", "space": {"lora.rank": [2, 8], "lr": [3e-3]},
        "sft": {"dataset": str(small_dataset), "model": tiny_model_dir, "max_steps": 4,
                "batch_size": 8, "eval_steps": 1, "max_eval_rows": 16, "dtype": "fp32",
                "prompt_form": "compact", "lora": {"rank": 4, "alpha": 8}},
        "target_return": 20, "episodes": 2, "out": str(tmp_path / "t")})
    result = main(cfg)
    rows = read_csv(tmp_path / "t" / "results.csv")
    assert len(rows) == 2 and {r["lora.rank"] for r in rows} == {"2", "8"}
    assert all(r["eval_loss"] for r in rows)  # every trial reported a validation loss
    finished = [r for r in rows if r["status"] == "finished"]
    assert finished and result["finished"] == len(finished)  # ASHA keeps the first at a rung
    for r in finished:
        assert (Path(r["adapter"]) / "adapter_config.json").is_file()
        assert float(r["mean_return"]) >= 8  # CartPole lasts >= 8 steps
    best = yaml.safe_load((tmp_path / "t" / "best_config.yaml").read_text())
    sft = config_from_dict(SftJobConfig, best)  # ready to run
    assert sft.lora.rank == int(finished[0]["lora.rank"]) and sft.lr == 3e-3
    assert sft.dataset == str(small_dataset.resolve())


def test_killed_sweep_resumes_without_rerunning(ray_local, tiny_model_dir, tmp_path):
    out = tmp_path / "k"
    # 24 trials: a trial process runs the next one at once (reuse_actors), in well under a
    # second once the first has loaded the model, so a short sweep could end between the second
    # result and the kill (ten trials did on a fast CPU)
    targets = [5 * (k + 1) for k in range(24)]
    args = [sys.executable, "-m", "policylm.jobs.sweep", "kind=target",
            f"policy={tiny_policy(tiny_model_dir)}", f"space={{target_return: {targets}}}",
            "episodes=3", "max_concurrent_trials=1", f"out={out}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0"  # save the sweep's state at every step
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    done: dict[Path, str] = {}
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(done) < 2:
            done = {p: p.read_text() for p in out.glob("tune/sweep/*/result.json")
                    if p.stat().st_size > 0}
            time.sleep(0.1)
        assert len(done) >= 2, "the sweep finished no trials in time"
        time.sleep(0.5)  # let the experiment state (saved at every step) record them
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "results.csv").exists()  # it was killed before the end
    cfg = config_from_dict(SweepConfig, {
        "kind": "target", "policy": tiny_policy(tiny_model_dir),
        "space": {"target_return": targets}, "episodes": 3, "resume": True,
        "out": str(out)})
    result = main(cfg)
    assert result["finished"] == len(targets)
    rows = read_csv(out / "results.csv")
    assert sorted(float(r["target_return"]) for r in rows) == targets
    # trials finished before the kill kept their results (the same run's timestamp): not rerun
    kept = [json.loads(text.splitlines()[0])["timestamp"] for text in done.values()]
    after = [json.loads(p.read_text().splitlines()[0])["timestamp"] for p in done]
    assert kept == after
