"""The Crafter workflow in one command at a tiny budget: a tiny LLM plays, the filter keeps
the best episodes, SFT trains on them, base and tuned play held-out seeds (paired), the tuned
policy also replays the training seeds (reported apart)."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration


def test_self_improve_on_crafter(ray_local, tiny_model_dir, tmp_path):
    from policylm.jobs.self_improve import FilterSettings, SelfImproveConfig, main
    from policylm.jobs.sft import SftJobConfig
    from policylm.platform.training.scaling import TrainConfig

    out = main(SelfImproveConfig(
        env_id="Crafter", env_options={"length": 8}, episodes=4, heldout_episodes=3,
        num_workers=0,  # in this process: the rollout actors are tested in test_collect
        envs_per_worker=4, policy=f"hf://{tiny_model_dir}?dtype=fp32&prompt=compact",
        filter=FilterSettings(top_k=2),
        sft=SftJobConfig(max_steps=4, batch_size=8, eval_steps=0, save_steps=4,
                         logging_steps=1, dtype="fp32", prompt_form="compact",
                         train=TrainConfig(num_workers=0)),  # in-process
        out=str(tmp_path / "run")))
    run = Path(out["run_dir"])
    assert out["kept"]["total_episodes"] == 4 and out["kept"]["kept"] == 4
    stats = json.loads((run / "dataset" / "stats.json").read_text())
    assert stats["episodes_kept"] == 2  # top_k of the kept
    best = pq.read_table(run / "kept" / "episodes.parquet").sort_by([("return", "descending")])
    assert out["trained"]["episodes"] == 2 and out["trained"]["share"] == 0.5  # 2 of 4 played
    assert out["trained"]["mean_achievements"] == pytest.approx(
        sum(best.column("n_achievements").to_pylist()[:2]) / 2)
    # the tuned policy asks for the best trained return (its rows carry their return to go)
    returns = pq.read_table(run / "kept" / "episodes.parquet").column("return").to_pylist()
    assert out["target_return"] == max(returns)
    assert f"target_return={max(returns)}" in out["tuned_policy"]
    # by default the tuned policy scores by sum (pmi would subtract the frequencies it learned)
    assert "norm=sum" in out["tuned_policy"] and "adapter=" in out["tuned_policy"]
    base, tuned = out["heldout"]["base"], out["heldout"]["tuned"]
    assert base["episodes"] == tuned["episodes"] == 3
    for s in (base, tuned):
        assert "crafter_score" in s["achievements"] and s["length_mean"] <= 8
    assert tuned["difference_vs_base"]["pairs"] == 3  # the same held-out seeds for both
    paired = tuned["achievement_difference_vs_base"]
    assert paired["achievements"]["pairs"] == paired["crafter_score"]["pairs"] == 3
    assert paired["achievements"]["mean"] == pytest.approx(
        tuned["achievements"]["mean_achievements"] - base["achievements"]["mean_achievements"])
    assert out["training_seeds"]["tuned"]["episodes"] == 4
    assert len(out["seeds"]["heldout"]) == 3 and len(out["seeds"]["training"]) == 4
    assert not set(out["seeds"]["heldout"]) & set(out["seeds"]["training"])
    report = (run / "compare" / "report.md").read_text()
    assert "Crafter score" in report and "Most common actions" in report
    assert "Paired differences" in report and "tuned - base" in report
    assert (Path(out["adapter"]) / "adapter_model.safetensors").is_file()


def test_self_improve_continues_a_tuned_adapter(ray_local, tiny_model_dir, filled_adapter,
                                                 tmp_path):
    """configs/crafter_self_improve_tuned.yaml's path at a tiny budget, from a return-conditioned
    adapter (the seed workflow's second round): the rows keep the targets the base played for
    (dataset.target=played; adaptive targets here, so they vary), SFT continues the base's
    adapter (its lora_B starts at 0.05, a new adapter's at 0), the tuned policy prompts as the
    base did, and replay_training=false skips the training-seed replay."""
    import numpy as np
    import pyarrow as pa
    from safetensors.numpy import load_file

    from policylm.jobs.self_improve import SelfImproveConfig, main
    from policylm.platform.config import load_config
    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs import make_adapter
    from policylm.platform.records import PromptRecord, read_record

    config = Path(__file__).parents[2] / "configs" / "crafter_self_improve_tuned.yaml"
    adapter = filled_adapter(PromptRecord("compact", text_options=make_adapter(
        "Crafter", length=8, achievements="count").text_options))
    cfg = load_config(SelfImproveConfig, config, [
        f"policy=hf://{tiny_model_dir}?dtype=fp32&adapter={adapter}&target_return=5&adaptive=1",
        "env_options.length=8", "episodes=4", "heldout_episodes=2", "num_workers=0",
        "envs_per_worker=4", "filter.top_k=2", "sft.max_steps=2", "sft.batch_size=8",
        "sft.lr=0.0001", "sft.dtype=fp32", "sft.train.num_workers=0", f"out={tmp_path / 'run'}"])
    assert cfg.dataset.target == "played" and not cfg.replay_training  # as the config sets
    assert cfg.env_options == {"length": 8, "achievements": "count"}
    out = main(cfg)
    run = Path(out["run_dir"])
    kept = tr.read_trajectories(run / "kept" / "trajectories")
    rows = pa.concat_tables(pq.read_table(f) for f in (run / "dataset" / "dataset" / "train")
                            .glob("*.parquet"))
    by_step = {(e, t): v for e, t, v in zip(kept.column(tr.EPISODE_ID).to_pylist(),
                                            kept.column(tr.T).to_pylist(),
                                            kept.column(tr.TARGET_RETURN).to_pylist(),
                                            strict=True)}
    targets = rows.column("target_return").to_pylist()
    assert targets == [by_step[(e, t)] for e, t in zip(
        rows.column(tr.EPISODE_ID).to_pylist(), rows.column(tr.T).to_pylist(), strict=True)]
    assert max(targets) == 5.0 and (min(targets) < 5.0 or max(
        kept.column(tr.REWARD).to_pylist()) <= 0)  # adaptive: 5 minus the reward so far
    assert out["target_return"] == 5.0 and "adaptive=1" in out["tuned_policy"]
    assert "norm=" not in out["tuned_policy"] and str(adapter) not in out["tuned_policy"]
    tuned = load_file(str(Path(out["adapter"]) / "adapter_model.safetensors"))
    lora_b = [v for k, v in tuned.items() if "lora_B" in k]
    assert lora_b and all(abs(float(v.mean()) - 0.05) < 0.01 for v in lora_b)
    assert any(not np.allclose(v, 0.05) for v in lora_b)  # and trained on
    assert read_record(out["adapter"]).text_options["achievements"] == "count"
    assert out["training_seeds"] is None and not (run / "compare-train").exists()
    assert out["heldout"]["tuned"]["difference_vs_base"]["pairs"] == 2


def test_crafter_bot_demos_on_two_actors(ray_local, tmp_path):
    """The scripted Crafter demonstrator as a python: policy on two rollout actors: the same
    steps as in one process (each actor's replica and env stay in step), the expert unlocks a
    table and wood tools within 120 steps, eps weakens it."""
    from policylm.jobs.collect import CollectConfig, PolicySource, main
    from policylm.platform.data import trajectories as tr

    bot = "python:policylm.platform.envs.crafter_bot:CrafterBot"
    kw = dict(env_id="Crafter", env_options={"length": 120}, episodes_per_policy=1,
              policies=[PolicySource("expert", bot), PolicySource("weak", f"{bot}?eps=0.6")])
    runs = {}
    for name, workers in (("par", 2), ("seq", 0)):
        main(CollectConfig(num_workers=workers, envs_per_worker=1, chunk_size=1,
                           out=str(tmp_path / name), **kw))
        table = tr.read_trajectories(tmp_path / name / "trajectories").drop_columns([tr.RUN_ID])
        runs[name] = table.sort_by([(tr.EPISODE_ID, "ascending"), (tr.T, "ascending")])
    assert runs["par"].equals(runs["seq"])
    steps = runs["par"].to_pylist()
    unlocked = {skill: set() for skill in ("expert", "weak")}
    for row in steps:
        unlocked[row[tr.SKILL]].update(row["achievements_unlocked"])
    assert {"place_table", "make_wood_pickaxe", "make_wood_sword"} <= unlocked["expert"]
    last = {}
    for row in steps:
        last[row[tr.EPISODE_ID]] = (row[tr.SKILL], row["achievement_count"])
    counts = {s: [c for k, c in last.values() if k == s] for s in unlocked}
    assert min(counts["expert"]) > max(counts["weak"])
