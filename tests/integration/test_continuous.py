"""Continuous actions end to end on HalfCheetah-v5 with a tiny model: collection writes numeric
action text and qpos/qvel states, the dataset carries them, SFT trains on them, GRPO (states
mode) scores completions with the format, bc and env rewards, and the LLM policy plays by
generation."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration
CHEETAH = {"max_episode_steps": 8}


def test_halfcheetah_collect_sft_grpo_evaluate(ray_local, tiny_model_dir, tmp_path):
    from policylm.jobs.build_dataset import BuildDatasetConfig
    from policylm.jobs.build_dataset import main as build
    from policylm.jobs.collect import CollectConfig, PolicySource
    from policylm.jobs.collect import main as collect
    from policylm.jobs.evaluate import EvaluateConfig
    from policylm.jobs.evaluate import main as evaluate
    from policylm.jobs.grpo import GrpoJobConfig
    from policylm.jobs.grpo import main as grpo
    from policylm.jobs.sft import SftJobConfig
    from policylm.jobs.sft import main as sft
    from policylm.platform.config import config_from_dict

    zero = "constant:<action>0 0 0 0 0 0</action>"
    collect(CollectConfig(env_id="HalfCheetah-v5", env_options=CHEETAH, episodes_per_policy=3,
                          policies=[PolicySource("random", "random:"), PolicySource("zero", zero)],
                          num_workers=0, out=str(tmp_path / "collect")))
    build(BuildDatasetConfig(trajectories=str(tmp_path / "collect"), validation_fraction=0.0,
                             out=str(tmp_path / "ds")))
    rows = pq.read_table(tmp_path / "ds" / "dataset" / "train")
    assert rows.num_rows == 48 and rows.column("env_state").null_count == 0
    assert len(rows.column("env_state")[0].as_py()) == 18  # qpos 9 + qvel 9
    texts = rows.column("completion").to_pylist()
    assert "<action>0.00 0.00 0.00 0.00 0.00 0.00</action>" in texts
    assert all(t.startswith("<action>") and len(t.split()) == 6 for t in texts)

    tuned = sft(config_from_dict(SftJobConfig, {
        "dataset": str(tmp_path / "ds"), "model": tiny_model_dir, "prompt_form": "compact",
        "max_steps": 8, "batch_size": 8, "lr": 5e-3, "eval_steps": 0, "save_steps": 8,
        "logging_steps": 1,
        "dtype": "fp32", "full_finetune": True, "train": {"num_workers": 0},  # in-process
        "out": str(tmp_path / "sft")}))
    losses = [loss for _, loss in tuned["train_loss"]]
    assert losses[-1] < losses[0]  # it learns the numeric action text

    result = grpo(config_from_dict(GrpoJobConfig, {
        "dataset": str(tmp_path / "ds"), "model": tuned["adapter"], "env_id": "HalfCheetah-v5",
        "env_options": CHEETAH, "rewards": {"format": 0.5, "bc": 1.0, "env": 1.0},
        "env_reward": {"policy": zero, "horizon": 2, "gamma": 1.0}, "num_generations": 4,
        "batch_size": 8, "max_completion_length": 40, "max_steps": 2, "save_steps": 2,
        "dtype": "fp32", "train": {"num_workers": 0}, "out": str(tmp_path / "grpo")}))
    for name in ("format_reward", "bc_reward", "env_reward"):
        assert len(result["rewards"][name]) == 2, name
    bc = [r for _, r in result["rewards"]["bc_reward"]]
    assert all(-1.0 <= r <= 0.0 for r in bc)  # scaled negative distance, -1 when unparsable

    out = evaluate(EvaluateConfig(
        policy=f"hf://{tiny_model_dir}?dtype=fp32&prompt=compact&mode=generate"
               "&max_new_tokens=40&fallback=random",
        env_id="HalfCheetah-v5", env_options=CHEETAH, targets=[0.0], episodes=1,
        num_workers=0, out=str(tmp_path / "eval")))
    (stats,) = out["targets"].values()
    assert stats["count"] == 1 and np.isfinite(stats["mean"])
    assert Path(out["run_dir"], "report.md").is_file()


def test_episodic_grpo_with_generated_actions(ray_local, tiny_model_dir, tmp_path):
    from policylm.jobs.grpo_episodes import GrpoEpisodesConfig
    from policylm.jobs.grpo_episodes import main as grpo
    from policylm.platform.config import config_from_dict

    result = grpo(config_from_dict(GrpoEpisodesConfig, {
        "model": tiny_model_dir, "prompt_form": "compact", "dtype": "fp32",
        "env_id": "HalfCheetah-v5", "env_options": {"max_episode_steps": 3}, "iterations": 1,
        "seeds_per_iteration": 1, "group_size": 2, "rollout_workers": 1, "envs_per_worker": 2,
        "max_completion_length": 24, "target_return": 0, "lr": 1e-3,
        "out": str(tmp_path / "ep")}))
    (it,) = result["iterations"]
    assert it["episodes"] == 2 and it["groups"] == 1
    # random fallbacks make the two returns differ, so the group is kept and all 6 steps train
    assert it["filtered_groups"] == 0 and it["steps_trained"] == 6
    assert np.isfinite(it["loss"])
    steps = pq.read_table(Path(result["run_dir"]) / "trajectories")
    assert all(t.startswith("<action>") for t in steps.column("action_text").to_pylist())


def test_control_config_at_a_tiny_budget(ray_local, tiny_model_dir, tmp_path):
    """configs/halfcheetah.yaml at a tiny budget: RLlib PPO experts with continuous actions are
    collected, exported to Minari with reference returns, the LLM is fine-tuned and plays every
    target, MLP BC (all rows, the best skill's) and GRPO from the adapter play the highest target
    on the same seeds, and the report has the normalised scores and paired differences."""
    import json

    import minari

    from policylm.jobs.control import ControlConfig, main
    from policylm.platform.config import load_config

    cfg = load_config(ControlConfig, Path(__file__).parents[2] / "configs" / "halfcheetah.yaml", [
        "env_options={max_episode_steps: 6, box_codec: digits, bins: 9}",
        "experts.select=iteration",
        "experts.skills={medium: 1, expert: 2}", "experts.train_batch_size=120",
        "experts.minibatch_size=60", "experts.num_epochs=1", "experts.num_env_runners=0",
        "experts.envs_per_runner=2", "experts.eval_episodes=2",
        "collect.episodes_per_policy=3", "collect.num_workers=0", "dataset.max_rows_per_skill=0",
        "dataset.validation_fraction=0.4",
        f"sft.model={tiny_model_dir}", "sft.max_steps=2", "sft.batch_size=4", "sft.dtype=fp32",
        "sft.max_eval_rows=8", "sft.save_steps=2", "sft.train.num_workers=0",
        "evaluate.targets=[0, 5]", "evaluate.episodes=2", "evaluate.num_workers=0",
        "bc.steps=20", "bc.hidden=[8]", "grpo.max_steps=1", "grpo.num_generations=2",
        "grpo.batch_size=4", "grpo.save_steps=1",
        "grpo.dtype=fp32", "grpo.train.num_workers=0", "grpo.env_reward.horizon=2",
        f"out={tmp_path / 'control'}"])
    out = main(cfg)
    run = tmp_path / "control"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["skills"]) == {"random", "medium", "expert"}
    texts = pq.read_table(run / "collect" / "trajectories").column("action_text").to_pylist()
    assert all(len(t) == 6 and set(t) <= set("012345678") for t in texts)  # digits
    refs = metrics["references"]
    best = max(("medium", "expert"), key=lambda s: metrics["skills"][s]["mean"])
    assert refs == {"min": metrics["skills"]["random"]["mean"],
                    "max": metrics["skills"][best]["mean"], "expert": best}
    ds = minari.load_dataset(metrics["minari"]["dataset_id"])  # the run's store (env var set)
    assert ds.total_episodes == 9
    assert minari.get_normalized_score(ds, np.array([refs["max"]])).tolist() == \
        pytest.approx([1.0])
    assert [r["policy"] for r in metrics["scores"]] == \
        ["fine-tuned", "fine-tuned", "bc-all", "bc-best", "grpo"]
    scale = 100 / (refs["max"] - refs["min"])
    for r in metrics["scores"]:
        assert r["return"]["count"] == 2
        assert r["normalised"]["mean"] == pytest.approx((r["return"]["mean"] - refs["min"]) * scale)
    assert metrics["bc"]["bc-best"]["skills"] == [best]
    assert metrics["bc"]["bc-all"]["rows"] > metrics["bc"]["bc-best"]["rows"]
    for part in (*metrics["bc"].values(), metrics["grpo"]):  # paired on the same 2 seeds
        assert part["difference_vs_fine_tuned"]["pairs"] == 2
    assert metrics["grpo"]["env_reward"]["policy"].startswith("rllib://")  # the expert
    assert metrics["evaluate"]["fine-tuned"]["steps_per_s"] > 0
    held = metrics["imitation"]  # every policy on the same held-out rows
    assert set(held) == {"fine-tuned", "bc-all", "bc-best", "grpo"}
    assert len({v["rows"] for v in held.values()}) == 1 and held["bc-all"]["rows"] > 0
    assert all(v["mse"] >= 0 for v in held.values())
    assert held["bc-all"]["invalid_rate"] is None  # an MLP writes no text
    assert 0 <= held["fine-tuned"]["invalid_rate"] <= 1
    report = (run / "report.md").read_text()
    assert "Normalised score" in report and "bc-best" in report and "## Goal" in report
    assert out["goal"]["bar"] == 0.9
