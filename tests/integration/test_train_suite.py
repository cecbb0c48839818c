"""The BabyAI workflow (bot demos -> dataset -> SFT -> benchmark) at a tiny budget."""

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from policylm.jobs.train_suite import TrainSuiteConfig, main
from policylm.platform.config import load_config
from policylm.platform.data import trajectories as tr
from policylm.platform.records import read_record

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).parents[2] / "configs" / "babyai_balrog.yaml"


def test_babyai_workflow_small(ray_local, tmp_path, tiny_model_dir):
    cfg = load_config(TrainSuiteConfig, CONFIG, [
        "collect.episodes_per_policy=2", "collect.envs_per_worker=2", "collect.chunk_size=2",
        f"sft.model={tiny_model_dir}", "sft.max_steps=2", "sft.batch_size=4", "sft.dtype=fp32",
        "sft.eval_steps=0", "sft.max_eval_rows=8", "benchmark.episodes=1",
        "benchmark.num_workers=0", "benchmark.envs_per_worker=5", "dataset.history=2",
        "collect.env_options={memory: true}", "collect.num_workers=0",
        "sft.train.num_workers=0",  # in-process (Ray Train workers: test_sft)
        f"out={tmp_path / 'run'}"])
    result = main(cfg)
    run = tmp_path / "run"
    for f in ("report.md", "metrics.json", "dataset/stats.json", "sft/adapter/adapter_config.json",
              "benchmark-fine-tuned/report.md", "benchmark-untrained/scores.png"):
        assert (run / f).is_file(), f
    tasks = ("goto", "pickup", "open", "putnext", "pick_up_seq_go_to")
    steps = sum(tr.read_trajectories(run / "collect" / t / "trajectories").num_rows
                for t in tasks)
    rows = sum(s["rows"] for s in result["dataset"].values())
    assert rows == steps  # every demonstration step of every task, once
    for label in ("fine-tuned", "untrained"):
        scores = result["scores"][label]
        assert set(scores["tasks"]) == set(tasks)
        assert scores["overall"]["episodes"] == 5
        bench = json.loads((run / f"benchmark-{label}" / "metrics.json").read_text())
        assert bench["held_out"] is True  # checked against the demonstrations' seeds
    # the dataset's history reaches the adapter, and the benchmarked policy acts with it
    assert read_record(run / "dataset" / "dataset").history == 2
    assert read_record(run / "sft" / "adapter").history == 2
    # and the env text options of the rows (the memory): playing it without them is refused
    assert read_record(run / "dataset" / "dataset").text_options == {"memory": True}
    assert read_record(run / "sft" / "adapter").text_options == {"memory": True}
    rows = [json.loads(line) for line in (run / "dataset" / "dataset" / "train.jsonl").open()]
    # a row after the first step holds the earlier steps as turns: user, assistant, ..., user
    assert max(len(r["messages"]) for r in rows) == 1 + 2 * 3 + 2  # 3 earlier steps at most
    assert all([m["role"] for m in r["messages"]] == ["system"] + ["user", "assistant"] * (
        (len(r["messages"]) - 1) // 2) for r in rows)
    bench_cfg = yaml.safe_load((run / "benchmark-fine-tuned" / "config.yaml").read_text())
    assert "adapter=" in bench_cfg["policy"] and "target_return=1" in bench_cfg["policy"]
    # the objects seen before are in the rows, and the benchmark acts on the same observations
    assert any("Out of view, seen before:" in m["content"] for r in rows for m in r["messages"])
    assert bench_cfg["env_options"] == {"memory": True}
    bench_report = (run / "benchmark-fine-tuned" / "report.md").read_text()
    assert "env_options={'memory': True}" in bench_report
    # generalisation: the fine-tuned model on the missions of the held-out pairs
    heldout = result["scores"]["fine-tuned, held-out pairs"]
    assert set(heldout["tasks"]) == set(tasks) and heldout["overall"]["episodes"] == 5
    played = json.loads((run / "benchmark-fine-tuned-held-out-pairs" / "metrics.json").read_text())
    assert played["suite"] == "babyai-mixed-test"
    assert {t["env_id"] for t in played["tasks"].values()} == {
        f"BabyAI-MixedTestLocal-{t}-v0" for t in tasks}
    report = (run / "report.md").read_text()
    assert "Goal: fine-tuned >= 36 %" in report and "untrained % ± s.e." in report



def test_babyai_rl_workflow_small(ray_local, tmp_path, tiny_model_dir):
    """The RL config's path: SFT, then GRPO on the mixed-task level from the adapter, then the
    benchmark of both, the GRPO-trained one paired with the fine-tuned one on the same seeds."""
    from policylm.platform.envs.babyai_levels import mixed_task

    cfg = load_config(TrainSuiteConfig, CONFIG.parent / "babyai_balrog_rl.yaml", [
        "collect.episodes_per_policy=1", "collect.envs_per_worker=3", "collect.chunk_size=3",
        f"sft.model={tiny_model_dir}", "sft.max_steps=2", "sft.batch_size=4", "sft.dtype=fp32",
        "sft.eval_steps=0", "sft.max_eval_rows=8", "collect.num_workers=0",
        "sft.train.num_workers=0", "grpo.iterations=1", "grpo.seeds_per_iteration=5",
        "grpo.group_size=2", "grpo.rollout_workers=0", "grpo.envs_per_worker=5",
        "grpo.dtype=fp32", "benchmark.episodes=1", "benchmark.num_workers=0",
        "benchmark.heldout=false", "benchmark.compare_base=false", "task_episodes={putnext: 2}",
        f"out={tmp_path / 'run'}"])
    result = main(cfg)
    run = tmp_path / "run"
    for task, per_skill in (("goto", 1), ("putnext", 2)):  # 3 demonstrators each
        played = tr.episode_table(tr.read_trajectories(run / "collect" / task / "trajectories"))
        assert played.num_rows == 3 * per_skill, task
    assert "(2 on putnext)" in (run / "report.md").read_text()
    (it,) = result["grpo"]["iterations"]
    assert it["episodes"] == 10 and it["groups"] == 5
    played = tr.read_trajectories(run / "grpo" / "trajectories")

    def kind(mission: str) -> str:
        if " then " in mission or " after you " in mission:
            return "pick_up_seq_go_to"
        return next(k for p, k in (("go to", "goto"), ("pick up", "pickup"), ("open", "open"),
                                   ("put", "putnext")) if mission.startswith(p))

    starts = played.filter(pc.equal(played.column(tr.T), 0))
    seen = {(s, kind(t.split("\n")[0].removeprefix("Mission: "))) for s, t in zip(
        starts.column(tr.SEED).to_pylist(), starts.column(tr.OBS_TEXT).to_pylist(), strict=True)}
    assert seen == {(s, mixed_task(s)) for s, _ in seen}  # each seed plays its own task
    assert len({k for _, k in seen}) >= 2  # the mixed level: several tasks in one iteration
    assert read_record(run / "grpo" / "adapter").text_options == {"memory": True}
    grpo_cfg = yaml.safe_load((run / "grpo" / "config.yaml").read_text())
    assert grpo_cfg["env_options"] == {"memory": True}  # the SFT rows' text options
    assert grpo_cfg["env_id"] == "BabyAI-MixedTrainLocal-v0" and grpo_cfg["target_return"] == 1
    # the GRPO-trained adapter is benchmarked on the fine-tuned one's seeds, paired with it
    after = json.loads((run / "benchmark-after-GRPO" / "metrics.json").read_text())
    assert "adapter=" + str(run / "grpo" / "adapter") in after["policy"]
    diff = result["grpo"]["against_fine_tuned"]
    assert diff == after["baseline"] and diff["overall"]["pairs"] == 5
    scores = result["scores"]
    assert diff["overall"]["mean"] == pytest.approx(
        scores["after GRPO"]["overall"]["score"] - scores["fine-tuned"]["overall"]["score"])
    report = (run / "report.md").read_text()
    assert "After GRPO minus fine-tuned, paired over the 5 episodes" in report
    assert "Goal: after GRPO >= 80 %" in report


def test_crafter_workflow_small(ray_local, tmp_path, tiny_model_dir):
    """The Crafter config's path: the scripted bot at two skills, rows whose text gives the
    achievement count, SFT, the benchmark with per-achievement rates and steps/s, and the
    report's achievements table and plot (demonstrations next to the models)."""
    cfg = load_config(TrainSuiteConfig, CONFIG.parent / "crafter_balrog.yaml", [
        "collect.episodes_per_policy=2", "collect.envs_per_worker=2", "collect.chunk_size=2",
        "collect.num_workers=0", "collect.env_options={achievements: count, length: 40}",
        f"sft.model={tiny_model_dir}", "sft.max_steps=2", "sft.batch_size=4", "sft.dtype=fp32",
        "sft.eval_steps=0", "sft.max_eval_rows=8", "sft.train.num_workers=0",
        "benchmark.episodes=2", "benchmark.num_workers=0", f"out={tmp_path / 'run'}"])
    result = main(cfg)
    run = tmp_path / "run"
    assert (run / "achievements.png").is_file()
    assert read_record(run / "sft" / "adapter").text_options == {
        "max_entities": 8, "achievements": "count"}
    rows = [json.loads(line) for line in (run / "dataset" / "dataset" / "train.jsonl").open()]
    assert all(r["messages"][1]["content"].endswith(" of 22.") for r in rows)
    bench_cfg = yaml.safe_load((run / "benchmark-fine-tuned" / "config.yaml").read_text())
    assert bench_cfg["env_options"] == {"achievements": "count", "length": 40}
    bench = json.loads((run / "benchmark-fine-tuned" / "metrics.json").read_text())
    task = bench["tasks"]["default"]
    assert task["steps_per_s"] > 0 and task["length_mean"] <= 40
    assert len(task["achievements"]["success_rates"]) == 22  # every achievement, seen or not
    # the demonstrations' rates, counted by hand from the collected episodes
    steps = tr.read_trajectories(run / "collect" / "default" / "trajectories").to_pylist()
    rates = result["achievements"]
    for skill in ("expert", "good"):
        episodes: dict[str, set] = {}
        for s in steps:
            if s["skill"] == skill:
                episodes.setdefault(s["episode_id"], set()).update(s["achievements_unlocked"])
        assert len(episodes) == 2
        by_hand = {a: sum(a in e for e in episodes.values()) / 2 for a in rates["fine-tuned"]}
        assert rates[f"demonstrations ({skill}, train seeds)"] == by_hand
    assert rates["demonstrations (expert, train seeds)"]["collect_wood"] == 1.0  # the bot works
    assert rates["fine-tuned"] == task["achievements"]["success_rates"]
    assert set(rates) == {"demonstrations (expert, train seeds)",
                          "demonstrations (good, train seeds)", "fine-tuned", "untrained"}
    report = (run / "report.md").read_text()
    assert "## Achievements" in report and "![achievements](achievements.png)" in report
    assert "Goal: fine-tuned >= 25.5 %" in report
    over = result["scores"]["fine-tuned"]["overall"]
    assert (f"fine-tuned minus the goal: {over['score'] - 25.5:.1f} ± {over['se']:.1f} points"
            in report)
    assert "env steps/s" in (run / "benchmark-fine-tuned" / "report.md").read_text()
