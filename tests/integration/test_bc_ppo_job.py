"""policylm bc-ppo end to end on CartPole at tiny budgets: real demos, Ray Data conversion,
RLlib BC, PPO trials under Tune, and every output file."""

import json
from pathlib import Path

import numpy as np
import torch

from policylm.jobs.bc_ppo import BcPpoConfig, PPOSettings, main

# a policy "trained elsewhere": push the way the pole falls and the cart drifts (a linear
# score of tanh(obs); sampled from its softmax, as the evaluation does)
HEURISTIC = """
from torch import nn

class Heuristic(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.head = nn.Linear(4, 2)

    def forward(self, obs):
        return self.head(self.body(obs))
"""


def external_policy(tmp_path: Path) -> str:
    (tmp_path / "heuristic.py").write_text(HEURISTIC)
    state = {"body.0.weight": torch.eye(4), "body.0.bias": torch.zeros(4),
             "head.weight": torch.tensor([[0.0, 0, 0, 0], [0, 5, 10, 10]]),
             "head.bias": torch.zeros(2)}
    torch.save(state, tmp_path / "heuristic.pt")
    return f"pytorch://{tmp_path / 'heuristic.pt'}?class={tmp_path / 'heuristic.py'}:Heuristic"


def test_bc_ppo_on_cartpole(ray_local, tmp_path):
    init = external_policy(tmp_path)
    cfg = BcPpoConfig(
        env_id="CartPole-v1",
        demo_policy="python:policylm.platform.envs.cartpole:CartPoleHeuristic",
        demo_episodes=4, num_workers=0, bc_steps=30, transfer_env_id="CartPole-v0",
        transfer_frames=1000, seeds=[0, 1], frames=2000, threshold=150, eval_episodes=3,
        methods=["bc-ppo", "scratch", "transfer", "external"], init=init,
        ppo=PPOSettings(train_batch_size=1000, minibatch_size=250, envs=2),
        out=str(tmp_path / "run"))
    out = main(cfg)
    run = Path(out["run_dir"])

    assert out["demos"]["all"]["mean_return"] == 500.0
    bc = out["bc"]
    # 4 episodes of 500 steps: 3 trained on, 1 held out, on which the accuracy is measured
    assert out["demos"]["trained_episodes"] == 3 and out["demos"]["heldout_episodes"] == 1
    assert bc["rows"] == 500 and bc["train_rows"] == 1500 and bc["loss_last"] < bc["loss_first"]
    assert bc["accuracy"] > max(bc["chance"], bc["majority"]) + 0.1  # above chance

    results = [json.loads(p.read_text()) for p in sorted((run / "trials").glob("*/result.json"))]
    assert sorted(r["name"] for r in results) == [
        f"{m}-seed{s}" for m in ("bc-ppo", "external", "scratch", "transfer") for s in (0, 1)]
    for r in results:
        if r["method"] != "scratch":  # loaded weights equal the saved module's exactly
            assert r["init_check"]["policy_max_abs_diff"] == 0.0
        if r["method"] in ("bc-ppo", "external"):  # no trained critic: V starts at 0
            assert r["init_check"]["value_head_abs_sum"] == 0.0
        # one estimator: evaluations at frame 0 and after each 1000-frame iteration
        frames = [f for f, _ in r["curve"]]  # RLlib may sample a frame or two more
        assert r["frames"] >= 2000 and len(frames) == 3 and frames[0] == 0.0
        assert 1000 <= frames[1] < 1010 and 2000 <= frames[2] < 2010
        assert r["curve"][-1][1] == r["eval_after"]["mean"]
        assert list((Path(r["out_dir"]) / "tensorboard").glob("events.out.tfevents.*"))
        assert np.load(Path(r["out_dir"]) / "positions.npy").shape[1] == 2
    before = {m: np.mean([r["eval_before"]["mean"] for r in results if r["method"] == m])
              for m in ("bc-ppo", "scratch")}
    assert before["bc-ppo"] > before["scratch"]  # cloning the heuristic already balances longer
    # PPO's first weights are the external policy's: at frame 0 it plays what the policy itself
    # plays on the same evaluation seeds
    from policylm.platform.envs import make_adapter
    from policylm.platform.evaluation.sample_efficiency import evaluate_logits
    from policylm.platform.policies.external import build_module, load_class
    from policylm.platform.policies.network import load_state_dict, torch_logits_fn

    net = build_module(load_class(f"{tmp_path / 'heuristic.py'}:Heuristic"), {}, None)
    load_state_dict(net, str(tmp_path / "heuristic.pt"), "Heuristic")
    for r in (r for r in results if r["method"] == "external"):
        own = evaluate_logits(make_adapter("CartPole-v1"), torch_logits_fn(net), 3,
                              r["seed"] * 1000 + 100_000)
        assert r["eval_before"]["mean"] == own.mean > 400  # the heuristic balances
    assert out["external"]["logits_max_abs_diff"] <= 1e-5
    assert out["external"]["model_config"]["fcnet_hiddens"] == [4]
    # Ray Tune's MLflow callback: one run per trial (and the transfer source), each with the
    # curve its trial reported
    from mlflow import MlflowClient

    tracking = json.loads((run / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking["uri"])
    experiment = client.get_experiment_by_name(tracking["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(results) + 1
    for r in results:
        (mine,) = [m for m in runs if r["out_dir"] in m.data.params.values()]
        curve = client.get_metric_history(mine.info.run_id, "return")
        assert curve and curve[-1].value == r["eval_after"]["mean"]

    for name in ("return_vs_frames.png", "visitation_bc-ppo.png", "visitation_scratch.png",
                 "visitation_transfer.png", "visitation_external.png", "report.md",
                 "metrics.json", "config.yaml"):
        assert (run / name).stat().st_size > 0, name
    report = (run / "report.md").read_text()
    assert "Frames to reach return 150" in report and "held-out demonstration" in report
    assert set(out["methods"]) == {"bc-ppo", "scratch", "transfer", "external"}


def test_bc_ppo_from_a_language_model_on_babyai(ray_local, tiny_model_dir, filled_adapter,
                                                tmp_path):
    """configs/bc_ppo_babyai_llm.yaml's path at a tiny budget: an LLM with an adapter plays the
    demonstrations of BabyAI's open task from its text, the scripted bot plays the baseline's,
    each goes through BC into its own module, and PPO continues from each beside scratch."""
    from policylm.platform.config import load_config
    from policylm.platform.envs import make_adapter
    from policylm.platform.records import PromptRecord

    config = Path(__file__).parents[2] / "configs" / "bc_ppo_babyai_llm.yaml"
    env_id = "BabyAI-MixedTrainLocal-open-v0"
    adapter = filled_adapter(PromptRecord("compact", text_options=make_adapter(
        env_id, memory=True).text_options))
    cfg = load_config(BcPpoConfig, config, [
        f"demo_policy=hf://{tiny_model_dir}?dtype=fp32&adapter={adapter}&target_return=1.0",
        "demo_episodes=2", "demo_min_return=null", "num_workers=0", "bc_steps=3", "seeds=[0]",
        "frames=256", "ppo.train_batch_size=256", "ppo.minibatch_size=128", "ppo.envs=2",
        "eval_episodes=2", "max_concurrent_trials=1", f"out={tmp_path / 'run'}"])
    assert cfg.env_id == env_id and cfg.env_options == {"memory": True}
    assert cfg.methods == ["bc-ppo", "bc-ppo-baseline", "scratch"]
    out = main(cfg)
    run = Path(out["run_dir"])

    assert out["demos"]["policy"].startswith(f"hf://{tiny_model_dir}")
    assert out["baseline_demos"]["policy"] == cfg.baseline_demo_policy
    assert out["baseline_demos"]["all"]["success_rate"] == 1.0  # the bot opens the door
    for key in ("demos", "baseline_demos"):  # each demonstrator's own episodes and BC module
        assert out[key]["all"]["episodes"] == 2
        assert list((run / key / "trajectories").rglob("*.parquet"))
    assert out["bc"]["module"] != out["baseline_bc"]["module"]
    assert Path(out["bc"]["module"]).is_relative_to(run / "bc")
    assert Path(out["baseline_bc"]["module"]).is_relative_to(run / "baseline_bc")
    results = {r["method"]: r for r in (json.loads(p.read_text())
                                        for p in (run / "trials").glob("*/result.json"))}
    assert set(results) == {"bc-ppo", "bc-ppo-baseline", "scratch"}
    for method in ("bc-ppo", "bc-ppo-baseline"):  # PPO starts from that demonstrator's BC
        key = "bc" if method == "bc-ppo" else "baseline_bc"
        assert results[method]["init_path"] == out[key]["module"]
        assert results[method]["init_check"]["policy_max_abs_diff"] == 0.0
    report = (run / "report.md").read_text()
    assert "Demonstrations for `bc-ppo` from `hf://" in report
    assert "Demonstrations for `bc-ppo-baseline` from `python:" in report
    assert (run / "visitation_bc-ppo-baseline.png").stat().st_size > 0
    # the config's other returns: each method's median frames to each, from the same curves
    assert set(out["report_thresholds"]) == {"0.6", "0.85", "0.88"}
    assert set(out["report_thresholds"]["0.6"]) == set(results)
    assert "Median frames to other returns" in report
