"""Continuous network policies (Box actions), MLP behaviour cloning on dataset rows, Minari
reference returns and the control job's normalised scores and goal."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from policylm.platform.data import trajectories as tr
from policylm.platform.envs import make_adapter
from policylm.platform.policies import BoxPolicy, policy_from_uri
from policylm.platform.policies.network import build_mlp, save_mlp_policy


@pytest.fixture(scope="module")
def pendulum():
    return make_adapter("Pendulum-v1")  # Box(-2, 2, (1,)) actions, 3 observation numbers


def test_box_policy_takes_the_mean_clips_and_samples_per_slot(pendulum):
    def net(obs):  # mean = first observation number, log std = log 0.5
        return np.stack([obs[:, 0], np.full(len(obs), np.log(0.5))], axis=1)

    obs = [np.array([1.5, 0, 0], np.float32), np.array([3.0, 0, 0], np.float32)]
    greedy = BoxPolicy(pendulum, net)
    assert [a.tolist() for a in greedy.act(obs, [0, 1])] == [[1.5], [2.0]]  # 3.0 clipped to 2
    sampled = BoxPolicy(pendulum, net, sample=True)
    sampled.reset(0, 7)
    got = sampled.act(obs[:1], [0])[0][0]
    expect = 1.5 + 0.5 * np.random.default_rng(7).standard_normal(1)[0]
    assert got == pytest.approx(np.clip(expect, -2, 2), rel=1e-5)
    # a second episode in the slot starts its own stream: the draws of the first carry nothing
    sampled.act(obs[:1], [0])
    sampled.reset(0, 11)
    sampled.reset(1, 7)  # slot 1 plays seed 7: the first episode's draw, whatever slot 0 did
    both = sampled.act([obs[0], obs[0]], [0, 1])
    assert both[0][0] == pytest.approx(
        np.clip(1.5 + 0.5 * np.random.default_rng(11).standard_normal(1)[0], -2, 2), rel=1e-5)
    assert both[1][0] == pytest.approx(got, rel=1e-5)


def test_file_mlp_checkpoint_acts_in_a_box_space(tmp_path, pendulum):
    torch.manual_seed(0)
    net = build_mlp(3, 1, [8])
    path = save_mlp_policy(tmp_path / "mlp.pt", net, 3, 1, [8], "Pendulum-v1")
    policy = policy_from_uri(f"file://{path}", pendulum)
    obs = [np.array([0.1, -0.2, 0.05], np.float32)]
    with torch.no_grad():
        expect = float(net(torch.as_tensor(np.stack(obs)))[0, 0])
    assert policy.act(obs, [0])[0] == pytest.approx([np.clip(expect, -2, 2)], rel=1e-5)
    wrong = save_mlp_policy(tmp_path / "wrong.pt", build_mlp(3, 2, [8]), 3, 2, [8])
    with pytest.raises(ValueError, match=r"2 actions.*1 actions"):
        policy_from_uri(f"file://{wrong}", pendulum)


def _rows(tmp_path, n=64):
    """Trajectories of one episode where the action is 0.5 * obs[0], and a dataset with its
    even steps for training and its odd steps for validation."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    table = pa.table({tr.EPISODE_ID: ["e0"] * n, tr.T: list(range(n)),
                      tr.OBS: obs.tolist(), tr.ACTION: (0.5 * obs[:, :1]).tolist()})
    (tmp_path / "traj").mkdir()
    pq.write_table(table, tmp_path / "traj" / "part.parquet")
    for split, ts in (("train", range(0, n, 2)), ("validation", range(1, n, 2))):
        (tmp_path / "ds" / split).mkdir(parents=True)
        pq.write_table(pa.table({tr.EPISODE_ID: ["e0"] * len(ts), tr.T: list(ts),
                                 tr.SKILL: ["expert"] * len(ts)}),
                       tmp_path / "ds" / split / "part.parquet")
    return obs


def test_bc_rows_join_the_dataset_to_its_trajectories_and_bc_learns(tmp_path, pendulum,
                                                                    monkeypatch):
    from policylm.platform.training import bc

    obs = _rows(tmp_path)
    monkeypatch.setattr(tr, "read_trajectories",  # the test's minimal columns
                        lambda path, columns=None: pq.read_table(path / "part.parquet"))
    x, y = bc.bc_rows(tmp_path / "ds", tmp_path / "traj", "train")
    assert np.array_equal(x, obs[0::2]) and np.allclose(y[:, 0], 0.5 * obs[0::2, 0])
    held = bc.bc_rows(tmp_path / "ds", tmp_path / "traj", "validation")
    fit = bc.train_bc(x, y, pendulum.action_space, hidden=[16], steps=400, batch_size=16,
                      lr=1e-2, validation=held)
    assert fit.losses[-1][1] < fit.losses[0][1] / 4  # it learned the linear map
    assert fit.validation_loss < 0.01
    with pytest.raises(bc.BcDataError, match=r"no train row .* skill in \['weak'\]"):
        bc.bc_rows(tmp_path / "ds", tmp_path / "traj", "train", ["weak"])
    pq.write_table(pa.table({tr.EPISODE_ID: ["e9"], tr.T: [0], tr.SKILL: ["expert"]}),
                   tmp_path / "ds" / "train" / "part.parquet")
    with pytest.raises(bc.BcDataError, match="episode e9, step 0"):
        bc.bc_rows(tmp_path / "ds", tmp_path / "traj", "train")


def test_normalised_score_and_goal_by_hand():
    from policylm.platform.evaluation.control_report import goal, normalised

    refs = {"min": -50.0, "max": 350.0}
    assert normalised({"mean": 150.0, "se": 8.0}, refs) == {"mean": 50.0, "se": 2.0}
    assert normalised({"mean": None, "se": None}, refs) == {"mean": None, "se": None}
    scores = [{"policy": "fine-tuned", "target": 100, "normalised": {"mean": 30.0}},
              {"policy": "fine-tuned", "target": 300, "normalised": {"mean": 46.0}},
              {"policy": "bc-all", "target": None, "normalised": {"mean": 20.0}},
              {"policy": "bc-best", "target": None, "normalised": {"mean": 50.0}}]
    g = goal(scores, 300, 1.0)  # against the stronger baseline: 46 / 50
    assert g["baseline"] == "bc-best" and g["ratio"] == pytest.approx(0.92)
    assert g["passed"] and not g["moonshot"]
    assert not goal(scores, 300, 0.4)["passed"]  # the targets not in order
    scores[3]["normalised"]["mean"] = -5.0
    scores[2]["normalised"]["mean"] = -1.0
    assert goal(scores, 300, 1.0)["ratio"] is None  # no ratio to a baseline below random


def test_export_records_reference_returns(tmp_path, monkeypatch):
    import minari

    from policylm.jobs.export_minari import ExportMinariConfig, main
    from policylm.platform.config import ConfigError
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks

    adapter = make_adapter("Pendulum-v1", max_episode_steps=5)
    chunks = plan_chunks([("random", "random:"), ("expert", "constant:2")],
                         2, 0, 2)
    steps = pa.concat_tables([EpisodeRunner(adapter, 2).run(c.specs, "r") for c in chunks])
    tr.write_atomic(steps, tmp_path / "traj" / "part.parquet")
    episodes = tr.episode_table(steps).to_pylist()
    mean = {s: np.mean([e["return"] for e in episodes if e[tr.SKILL] == s])
            for s in ("random", "expert")}
    where = {"trajectories": str(tmp_path / "traj"), "dataset_id": "policylm/pendulum-v0",
             "store": str(tmp_path / "store")}
    with pytest.raises(ConfigError, match="'best' is neither a number nor a skill"):
        main(ExportMinariConfig(**where, ref_min="random", ref_max="best"))
    out = main(ExportMinariConfig(**where, ref_min="random", ref_max="1000"))
    assert out["ref_scores"] == {"min": pytest.approx(mean["random"]), "max": 1000.0}
    ds = minari.load_dataset("policylm/pendulum-v0")
    score = minari.get_normalized_score(ds, np.array([mean["random"], 1000.0]))
    assert score.tolist() == pytest.approx([0.0, 1.0])


def test_config_refusals_name_the_key():
    from policylm.jobs.control import BcBaselineConfig, ControlConfig
    from policylm.jobs.train_experts import TrainExpertsConfig
    from policylm.platform.config import ConfigError

    TrainExpertsConfig(ppo={"gamma": 0.99, "lambda_": 0.95, "vf_clip_param": 1e4}).validate()
    with pytest.raises(ConfigError, match=r"ppo\.gama: is not a PPOConfig\.training"):
        TrainExpertsConfig(ppo={"gama": 0.99}).validate()
    with pytest.raises(ConfigError, match=r"ppo\.lr: set it with lr= instead"):
        TrainExpertsConfig(ppo={"lr": 0.1}).validate()
    with pytest.raises(ConfigError, match="include_random"):
        ControlConfig(include_random=False).validate()
    with pytest.raises(ConfigError, match=r"^bc\.steps: must be >= 1"):
        ControlConfig(bc=BcBaselineConfig(steps=0)).validate()


def test_rllib_gaussians_map_to_the_bounds_and_kinds_must_match(pendulum):
    import gymnasium as gym

    from policylm.platform.policies.network import check_fit
    from policylm.rllib.checkpoints import unsquashed

    # RLlib's normalised range [-1, 1] -> Pendulum's [-2, 2]: mean x2, std x2
    fn = unsquashed(lambda obs: np.array([[0.5, np.log(0.1)]]), pendulum.action_space)
    assert fn(np.zeros((1, 3)))[0].tolist() == pytest.approx([1.0, np.log(0.2)])
    with pytest.raises(ValueError, match="acts in Discrete"):
        check_fit("ckpt", 3, 1, pendulum, gym.spaces.Discrete(1))
    bad = BoxPolicy(pendulum, lambda obs: np.zeros((len(obs), 3)))
    with pytest.raises(ValueError, match=r"gave 3; expected 1 \(values\) or 2 \(Gaussian\)"):
        bad.act([np.zeros(3, np.float32)], [0])


def test_ids_and_policy_settings_are_checked_before_any_work():
    from policylm.jobs.control import ControlConfig, default_minari_id
    from policylm.jobs.demo import DemoEvalConfig
    from policylm.jobs.export_minari import ExportMinariConfig
    from policylm.platform.config import ConfigError

    assert default_minari_id("ALE/Pong-v5") == "policylm/pong-mixed-v0"
    with pytest.raises(ConfigError, match="dataset_id: 'p/x-v0' must look like"):
        ExportMinariConfig(trajectories="t", dataset_id="p/x-v0").validate()
    with pytest.raises(ConfigError, match="minari_id"):
        ControlConfig(minari_id="cheetah").validate()
    with pytest.raises(ConfigError, match=r"\['temperature'\] have their own keys"):
        DemoEvalConfig(policy_params={"temperature": 1.0, "mode": "generate"}).validate()
