"""The main job end to end at a tiny budget, and experts on MiniGrid through FlatObsEnv."""

import json
from pathlib import Path

import pytest

from policylm.jobs.demo import DemoConfig, main
from policylm.jobs.train_experts import TrainExpertsConfig
from policylm.jobs.train_experts import main as train_main
from policylm.platform.config import load_config

pytestmark = pytest.mark.integration


def test_demo_small(ray_local, tmp_path):
    cfg = load_config(DemoConfig, Path(__file__).parents[2] / "configs" / "demo.yaml", [
        "experts.select=iteration", "experts.skills={weak: 1, expert: 2}",
        "experts.train_batch_size=500", "experts.minibatch_size=100", "experts.eval_episodes=2",
        "collect.episodes_per_policy=4", "collect.envs_per_worker=2", "collect.chunk_size=2",
        f"out={tmp_path / 'demo'}"])
    result = main(cfg)
    run = tmp_path / "demo"
    for f in ("config.yaml", "metrics.json", "report.md", "experts/experts.json",
              "collect/metadata.json", "dataset/stats.json", "dataset/dataset/train.jsonl"):
        assert (run / f).is_file(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["collect"]["skills"]) == {"random", "weak", "expert"}
    assert metrics["collect"]["episodes"] == 12
    rows = sum(s["rows"] for s in metrics["dataset"].values())
    assert rows == metrics["collect"]["steps"]
    assert "| expert |" in (run / "report.md").read_text()
    assert set(result["stage_seconds"]) == {"train_experts", "collect", "build_dataset"}


def test_train_experts_on_minigrid(ray_local, tmp_path):
    cfg = TrainExpertsConfig(env_id="MiniGrid-Empty-8x8-v0", select="iteration",
                             skills={"weak": 1}, train_batch_size=400, minibatch_size=100,
                             num_epochs=2, eval_episodes=1, out=str(tmp_path / "mg"))
    result = train_main(cfg)
    weak = result["experts"]["weak"]
    assert weak["uri"].startswith("rllib://") and weak["eval"]["count"] == 1
    assert -1e-9 <= weak["eval"]["mean"] <= 1.0  # MiniGrid returns lie in [0, 1]
