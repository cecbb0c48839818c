"""policylm bc-ppo end to end on CartPole at tiny budgets: real demos, Ray Data conversion,
RLlib BC, PPO trials under Tune, and every output file."""

import json
from pathlib import Path

import numpy as np

from policylm.jobs.bc_ppo import BcPpoConfig, PPOSettings, main


def test_bc_ppo_on_cartpole(ray_local, tmp_path):
    cfg = BcPpoConfig(
        env_id="CartPole-v1",
        demo_policy="python:policylm.platform.envs.cartpole:CartPoleHeuristic",
        demo_episodes=4, num_workers=0, bc_steps=30, transfer_env_id="CartPole-v0",
        transfer_frames=1000, seeds=[0, 1], frames=2000, threshold=150, eval_episodes=3,
        ppo=PPOSettings(train_batch_size=1000, minibatch_size=250, envs=2),
        out=str(tmp_path / "run"))
    out = main(cfg)
    run = Path(out["run_dir"])

    assert out["demos"]["all"]["mean_return"] == 500.0
    bc = out["bc"]
    assert bc["rows"] == 2000 and bc["loss_last"] < bc["loss_first"]
    assert bc["accuracy"] > max(bc["chance"], bc["majority"]) + 0.1  # above chance

    results = [json.loads(p.read_text()) for p in sorted((run / "trials").glob("*/result.json"))]
    assert sorted(r["name"] for r in results) == [
        f"{m}-seed{s}" for m in ("bc-ppo", "scratch", "transfer") for s in (0, 1)]
    for r in results:
        if r["method"] != "scratch":  # loaded weights equal the saved module's exactly
            assert r["init_check"]["policy_max_abs_diff"] == 0.0
        if r["method"] == "bc-ppo":
            assert r["init_check"]["value_head_abs_sum"] == 0.0
        assert r["frames"] >= 2000 and r["curve"][0][0] == 0.0
        assert list((Path(r["out_dir"]) / "tensorboard").glob("events.out.tfevents.*"))
        assert np.load(Path(r["out_dir"]) / "positions.npy").shape[1] == 2
    before = {m: np.mean([r["eval_before"]["mean"] for r in results if r["method"] == m])
              for m in ("bc-ppo", "scratch")}
    assert before["bc-ppo"] > before["scratch"]  # cloning the heuristic already balances longer

    for name in ("return_vs_frames.png", "visitation_bc-ppo.png", "visitation_scratch.png",
                 "visitation_transfer.png", "report.md", "metrics.json", "config.yaml"):
        assert (run / name).stat().st_size > 0, name
    report = (run / "report.md").read_text()
    assert "Frames to reach return 150" in report and "accuracy on the demonstrated" in report
    assert set(out["methods"]) == {"bc-ppo", "scratch", "transfer"}
