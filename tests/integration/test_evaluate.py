"""evaluate and compare end to end: LLM policies (tiny model) on rollout actors."""

import json

import numpy as np
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
    # by default, the test range's env seeds, and the report says so
    from policylm.platform.rollout.runner import derive_seed
    from policylm.platform.seeds import TEST_SEED

    assert seeds["target_10"] == sorted(derive_seed(TEST_SEED, e) for e in range(4))
    assert metrics["seeds"] == {"base": TEST_SEED, "range": "test"}
    # every episode starts at its target, and the remaining target falls by the reward
    # earned (CartPole: 1 a step)
    steps = tr.read_trajectories(run / "trajectories").to_pylist()
    for r in steps:
        assert r[tr.TARGET_RETURN] == float(r["skill"].split("_")[1]) - r[tr.T]
    report = (run / "report.md").read_text()
    assert "the test range (seeds that chose no setting)" in report
    m10 = metrics["targets"]["target_10"]
    assert f"| 10.00 | 4 | {m10['mean']:.1f} ± {m10['se']:.1f} |" in report
    # the rank correlations, computed a second way (scipy) from the episodes
    from scipy.stats import spearmanr

    pairs = [(float(r["skill"].split("_")[1]), r["return"]) for r in episodes.to_pylist()]
    rho = spearmanr([t for t, _ in pairs], [r for _, r in pairs]).statistic
    assert result["spearman_episodes"] == (None if np.isnan(rho) else pytest.approx(rho))
    means = [metrics["targets"][k]["mean"] for k in ("target_10", "target_200")]
    assert result["spearman_means"] == (None if means[0] == means[1] else
                                        (1.0 if means[1] > means[0] else -1.0))
    # CartPole-v1 success: return >= 475, which a random tiny model never reaches
    assert metrics["success_return"] == 475.0 and m10["success_rate"] == 0.0

    out = compare_main(CompareConfig(inputs=[str(run), "mix:constant:right?eps=0.2"],
                                     labels=["llm", "right"], episodes=4, num_workers=0,
                                     out=str(tmp_path / "cmp")))
    summaries = out["summaries"]
    assert summaries["llm"]["episodes"] == 8 and summaries["right"]["episodes"] == 4
    assert summaries["right"]["actions"]["right"] > 0.7
    # paired on the seeds both played: the policy's 4 episodes share seeds with the llm's
    diff = summaries["right"]["difference_vs_llm"]
    assert diff["pairs"] == 4 and diff["se"] is not None
    assert (tmp_path / "cmp" / "comparison.png").is_file()


@pytest.mark.slow
def test_untrained_embedded_model_on_cartpole(ray_local, tmp_path):
    """The real SmolLM2-135M, untrained: it acts (no invalid actions in score mode)."""
    result = main(EvaluateConfig(policy="hf://smollm2-135m", targets=[25, 500], episodes=2,
                                 num_workers=2, envs_per_worker=2, out=str(tmp_path / "ev")))
    assert all(m["count"] == 2 for m in result["targets"].values())
    assert all(v == 0.0 for v in result["invalid_rate"].values())


def test_compare_reports_success_on_minigrid(tmp_path):
    """Success on MiniGrid is reaching the goal (a positive reward): the bot always does, a
    policy that only turns left never does; their paired difference is beyond noise."""
    out = compare_main(CompareConfig(
        inputs=["python:policylm.platform.envs.minigrid_bot:MiniGridBot", "constant:left"],
        labels=["bot", "turning"], env_id="MiniGrid-Empty-5x5-v0", episodes=3, num_workers=0,
        out=str(tmp_path / "cmp")))
    bot, turning = out["summaries"]["bot"], out["summaries"]["turning"]
    assert bot["success_rate"] == 1.0 and turning["success_rate"] == 0.0
    assert bot["success_rate_se"] == 0.0 and turning["return"]["mean"] == 0.0
    diff = turning["difference_vs_bot"]
    assert diff["pairs"] == 3 and diff["mean"] == pytest.approx(-bot["return"]["mean"])
    assert diff["within_noise"] is False
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "success rate" in report and "turning - bot" in report


def test_one_policy_on_two_actors_is_split_between_them(ray_local, tmp_path):
    """4 episodes of one policy on 2 actors of 8 envs: two chunks of 2, one per actor (not
    one chunk of 4 while the other actor waits), with the episodes the same as when played
    in one chunk in this process."""
    def play(name, workers):
        compare_main(CompareConfig(inputs=["random:"], labels=["random"], episodes=4,
                                   num_workers=workers, envs_per_worker=8,
                                   out=str(tmp_path / name)))
        return tmp_path / name / "trajectories"

    split, whole = play("two", 2), play("one", 0)
    assert sorted(p.name for p in split.iterdir()) == ["random-p0-c00000.parquet",
                                                       "random-p0-c00001.parquet"]
    assert sorted(p.name for p in whole.iterdir()) == ["random-p0-c00000.parquet"]

    def episodes(d):
        rows = tr.read_trajectories(d).select([tr.EPISODE_ID, tr.SEED, tr.T, tr.ACTION_INDEX,
                                               tr.REWARD]).to_pylist()
        return sorted(rows, key=lambda r: (r[tr.EPISODE_ID], r[tr.T]))

    assert episodes(split) == episodes(whole)
