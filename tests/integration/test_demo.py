"""The main job end to end at a tiny budget, and experts on MiniGrid through FlatObsEnv."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from policylm.jobs.demo import DemoConfig, main
from policylm.jobs.train_experts import TrainExpertsConfig
from policylm.jobs.train_experts import main as train_main
from policylm.platform.config import load_config
from policylm.platform.records import read_record

pytestmark = pytest.mark.integration


def test_demo_small(tmp_path, tiny_model_dir):
    """Every stage at a tiny budget with a tiny model, run as the command a user types:
    experts, collection, dataset, SFT, evaluation of the fine-tuned and the untrained model,
    report and quality checks; the terminal shows the job's own lines only (Ray's and the
    libraries' messages are in console.log)."""
    overrides = [
        "experts.select=iteration", "experts.skills={weak: 1, expert: 2}",
        "experts.train_batch_size=500", "experts.minibatch_size=100", "experts.eval_episodes=2",
        "experts.num_env_runners=0", "collect.episodes_per_policy=4", "collect.envs_per_worker=2",
        "collect.chunk_size=2",
        "skill_source=expert-mix", "dataset.max_rows_per_skill=0", f"sft.model={tiny_model_dir}",
        "sft.max_steps=2", "sft.target_dropout=0.2", "evaluate.guidance=1.5",
        "sft.batch_size=4", "sft.dtype=fp32", "sft.eval_steps=0", "sft.max_eval_rows=8",
        "evaluate.targets=[10, 40, 200]", "evaluate.episodes=2", "evaluate.envs_per_worker=2",
        # play in the job's process (rollout actors: test_collect, test_evaluate)
        "collect.num_workers=0", "evaluate.num_workers=0",
        f"out={tmp_path / 'demo'}"]
    config = Path(__file__).parents[2] / "configs" / "demo.yaml"
    cfg = load_config(DemoConfig, config, overrides)
    proc = subprocess.run([str(Path(sys.executable).parent / "policylm"), "demo", "--config",
                           str(config), *overrides], capture_output=True, text=True,
                          timeout=900, env={k: v for k, v in os.environ.items()
                                            if k != "RAY_ADDRESS"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = tmp_path / "demo"
    for f in ("config.yaml", "metrics.json", "report.md", "target_vs_actual.png",
              "experts/experts.json", "collect/metadata.json", "dataset/stats.json",
              "dataset/dataset/train.jsonl", "sft/adapter/adapter_model.safetensors",
              "sft/loss.png", "evaluate-fine-tuned/metrics.json",
              "evaluate-untrained/metrics.json"):
        assert (run / f).is_file(), f
    metrics = json.loads((run / "metrics.json").read_text())
    # expert-mix: weak and medium are the best checkpoint with 80% / 50% random actions
    assert set(metrics["collect"]["skills"]) == {"random", "weak", "medium", "expert"}
    assert metrics["collect"]["episodes"] == 16
    col = json.loads((run / "collect" / "metadata.json").read_text())
    uris = col["policies"]
    assert uris["weak"] == f"mix:{uris['expert']}?eps=0.8"
    assert uris["medium"] == f"mix:{uris['expert']}?eps=0.5"
    rows = sum(s["rows"] for s in metrics["dataset"].values())
    assert rows == metrics["collect"]["steps"]
    # both policies played every target on the same number of episodes
    for label in ("fine-tuned", "untrained"):
        counts = [t["count"] for t in metrics["evaluate"][label]["targets"].values()]
        assert counts == [2, 2, 2], (label, counts)
    # the quality bar is computed from the evaluation and the collected returns
    q = metrics["quality"]
    tuned = metrics["evaluate"]["fine-tuned"]
    assert q["spearman"]["value"] == tuned["spearman_means"]
    assert q["highest_target"]["mean"] == tuned["targets"]["target_200"]["mean"]
    assert q["highest_target"]["bar"] == metrics["training_returns"]["median"]
    best_skill = max(s["return"]["mean"] for s in metrics["collect"]["skills"].values())
    assert q["best_data"]["bar"] == best_skill
    assert q["best_data"]["difference"] == q["highest_target"]["mean"] - best_skill
    # the adapter prompts in the form it was trained in; the untrained model in chat form
    assert read_record(str(run / "sft" / "adapter")).prompt_form == cfg.sft.prompt_form
    # trained with null-target rows, evaluated with return guidance (the base model without)
    played = {label: yaml.safe_load((run / f"evaluate-{label}" / "config.yaml").read_text())
              ["policy"] for label in ("fine-tuned", "untrained")}
    assert "guidance=1.5" in played["fine-tuned"] and "guidance" not in played["untrained"]
    text = (run / "report.md").read_text()
    assert "| expert |" in text and "## Quality bar" in text and "untrained mean" in text
    stages = {"train_experts", "collect", "build_dataset", "sft", "evaluate"}
    assert set(metrics["stage_seconds"]) == stages
    # the console: a few dozen lines (tqdm redraws a bar in place with \r), each stage started
    # and done, the SFT steps' bar; Ray's and the libraries' messages only in the log
    terminal = proc.stdout + proc.stderr
    assert terminal.count("\n") < 60, terminal
    for stage in stages:
        assert f"stage {stage}: start" in terminal and f"stage {stage}: done" in terminal, stage
    assert "sft steps: 100%" in terminal and "evaluate-fine-tuned episodes" in terminal
    log = (run / "console.log").read_text()
    assert "Started a local Ray instance" in log and "Started a local Ray" not in terminal
    assert "stage play: start" in log and "stage play:" not in terminal  # a stage's inner stage
    assert proc.stdout.splitlines()[-1] == f"policylm demo: outputs in {run}"


def test_train_experts_on_minigrid(ray_local, tmp_path):
    cfg = TrainExpertsConfig(env_id="MiniGrid-Empty-8x8-v0", select="iteration",
                             skills={"weak": 1}, train_batch_size=400, minibatch_size=100,
                             num_epochs=2, eval_episodes=1, num_env_runners=0,
                             out=str(tmp_path / "mg"))
    result = train_main(cfg)
    weak = result["experts"]["weak"]
    assert weak["uri"].startswith("rllib://") and weak["eval"]["count"] == 1
    # the saved checkpoint, played again on the same seed, returns what the job reported
    from policylm.jobs.train_experts import evaluate_uri

    again = evaluate_uri("MiniGrid-Empty-8x8-v0", {}, weak["uri"], 1, cfg.seed + 20_000)
    assert again["mean"] == weak["eval"]["mean"]


def test_train_experts_by_return_keeps_what_it_evaluated(ray_local, tmp_path):
    """select=return on a continuous env, with a remote env runner (as the HalfCheetah config):
    each iteration's greedy return is measured on the live module, and the checkpoint each
    skill keeps, loaded from disk and played on the same seeds, returns exactly that."""
    opts = {"max_episode_steps": 6}
    cfg = TrainExpertsConfig(env_id="HalfCheetah-v5", env_options=opts, select="return",
                             skills={"low": -1000.0, "high": 1000.0}, max_iterations=3,
                             train_batch_size=120, minibatch_size=60, num_epochs=1,
                             num_env_runners=1, envs_per_runner=2, eval_episodes=2,
                             out=str(tmp_path / "cheetah"))
    result = train_main(cfg)
    from policylm.jobs.train_experts import evaluate_uri

    evals = [row["eval"] for row in result["history"]]
    assert len(evals) == 3  # neither target is reachable: every iteration ran and was measured
    for skill, pick in (("low", min), ("high", max)):
        kept = result["experts"][skill]
        assert kept["eval_mean"] == pick(evals)
        again = evaluate_uri("HalfCheetah-v5", opts, kept["uri"], 2, cfg.seed + 10_000)
        assert again["mean"] == kept["eval_mean"]


def test_arena_demo_small(ray_local, tmp_path, tiny_model_dir):
    """The MettaGrid workflow config at a tiny budget: scripted skills play a 6-agent arena
    (rows per agent), the dataset and SFT run, the tuned and untrained model play every target
    with every agent counted, the s.e. taken over arenas."""
    cfg = load_config(DemoConfig, Path(__file__).parents[2] / "configs" / "mettagrid_arena.yaml", [
        "env_options={num_agents: 6, hearts: 20, max_steps: 6, width: 13, height: 13}",
        "collect.episodes_per_policy=2", f"sft.model={tiny_model_dir}", "sft.max_steps=2",
        "sft.batch_size=4", "sft.dtype=fp32", "sft.max_eval_rows=8", "sft.save_steps=2",
        "dataset.max_rows_per_skill=0", "evaluate.targets=[0, 4]", "evaluate.episodes=2",
        "evaluate.compare_base=true", "collect.num_workers=0", "evaluate.num_workers=0",
        "sft.train.num_workers=0", f"out={tmp_path / 'arena'}"])
    main(cfg)
    run = tmp_path / "arena"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["collect"]["skills"]) == {"random", "idle", "weak", "expert"}
    assert metrics["collect"]["episodes"] == 4 * 2 * 6  # skills x arenas x agents
    assert metrics["collect"]["steps"] == 4 * 2 * 6 * 6
    assert metrics["experts"] == {}  # scripted skills: no PPO stage
    assert "train_experts" not in metrics["stage_seconds"]
    for label in ("fine-tuned", "untrained"):
        counts = [t["count"] for t in metrics["evaluate"][label]["targets"].values()]
        assert counts == [12, 12], (label, counts)  # two arenas per target, 6 agents each
        for t in metrics["evaluate"][label]["targets"].values():  # s.e. over the 2 arenas
            assert t["arenas"] == 2 and t["agent_se"] is not None
    tuned = yaml.safe_load((run / "evaluate-fine-tuned" / "config.yaml").read_text())
    assert "guidance=1" in tuned["policy"]  # the config's return guidance reaches the policy
    assert "guidance" not in yaml.safe_load(
        (run / "evaluate-untrained" / "config.yaml").read_text())["policy"]
    report = (run / "report.md").read_text()
    assert "s.e. over the 2 arenas' mean returns" in report
    assert "6 agents per episode" in report and "MettaGrid-Arena" in report
