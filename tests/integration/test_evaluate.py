"""evaluate and compare end to end: LLM policies (tiny model) on rollout actors."""

import json

import pytest

from policylm.jobs.compare import CompareConfig
from policylm.jobs.compare import main as compare_main
from policylm.jobs.evaluate import EvaluateConfig, main
from policylm.platform.data import trajectories as tr

pytestmark = pytest.mark.integration


def test_evaluate_then_compare(ray_local, tiny_model_dir, tmp_path):
    policy = f"hf://{tiny_model_dir}?dtype=fp32&temperature=1"
    result = main(EvaluateConfig(policy=policy, targets=[10, 200], episodes=4, num_workers=2,
                                 envs_per_worker=2, out=str(tmp_path / "ev"),
                                 dataset=""))
    run = tmp_path / "ev"
    for f in ("metrics.json", "report.md", "target_vs_actual.png", "config.yaml"):
        assert (run / f).is_file(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["targets"]) == {"target_10", "target_200"}
    episodes = tr.episode_table(tr.read_trajectories(run / "trajectories"))
    for label, m in metrics["targets"].items():
        rets = [r["return"] for r in episodes.to_pylist() if r["skill"] == label]
        assert m["count"] == 4 and m["mean"] == pytest.approx(sum(rets) / 4)
    assert metrics["invalid_rate"] == {"target_10": 0.0, "target_200": 0.0}
    seeds = {r["skill"]: sorted(s["seed"] for s in episodes.to_pylist()
                                if s["skill"] == r["skill"]) for r in episodes.to_pylist()}
    assert seeds["target_10"] == seeds["target_200"]  # every target plays the same starts
    assert "| 10.00 | 4 |" in (run / "report.md").read_text()
    assert result["spearman_episodes"] is None or -1 <= result["spearman_episodes"] <= 1

    out = compare_main(CompareConfig(inputs=[str(run), "mix:constant:right?eps=0.2"],
                                     labels=["llm", "right"], episodes=4, num_workers=0,
                                     out=str(tmp_path / "cmp")))
    summaries = out["summaries"]
    assert summaries["llm"]["episodes"] == 8 and summaries["right"]["episodes"] == 4
    assert summaries["right"]["actions"]["right"] > 0.7
    assert (tmp_path / "cmp" / "comparison.png").is_file()


@pytest.mark.slow
def test_untrained_embedded_model_on_cartpole(ray_local, tmp_path):
    """The real SmolLM2-135M, untrained: it acts (no invalid actions in score mode)."""
    result = main(EvaluateConfig(policy="hf://smollm2-135m", targets=[25, 500], episodes=2,
                                 num_workers=2, envs_per_worker=2, out=str(tmp_path / "ev")))
    assert all(m["count"] == 2 for m in result["targets"].values())
    assert all(v == 0.0 for v in result["invalid_rate"].values())


def test_compare_reports_success_on_minigrid(tmp_path):
    out = compare_main(CompareConfig(
        inputs=["random:", "mix:constant:forward?eps=0.5"], labels=["random", "forward"],
        env_id="MiniGrid-Empty-8x8-v0", episodes=2, num_workers=0, out=str(tmp_path / "cmp")))
    for s in out["summaries"].values():
        assert 0.0 <= s["success_rate"] <= 1.0 and s["episodes"] == 2
    assert "success rate" in (tmp_path / "cmp" / "report.md").read_text()
