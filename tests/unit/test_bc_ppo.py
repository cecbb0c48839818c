"""bc-ppo parts without Ray: RLlib offline rows, sample-efficiency maths, scripted
demonstrators, the python: policy scheme and the report summary."""

import numpy as np
import pyarrow as pa
import pytest

from policylm.platform.data import trajectories as tr
from policylm.platform.data.rllib_offline import action_accuracy, to_rllib_rows
from policylm.platform.envs import make_adapter
from policylm.platform.envs.minigrid_bot import FORWARD, LEFT, PICKUP, RIGHT, TOGGLE, plan
from policylm.platform.evaluation.bc_ppo_report import summarise
from policylm.platform.evaluation.sample_efficiency import (
    evaluate_logits,
    frames_to_threshold,
    mean_std,
    median_or_none,
    on_grid,
)
from policylm.platform.policies import PolicyError, policy_from_uri
from policylm.tune.ppo_trials import load_policy, max_weight_diff

BOT = "python:policylm.platform.envs.minigrid_bot:MiniGridBot"


def _steps(episode: str, length: int, base: float, agent: int = 0) -> dict:
    """One episode's rows with obs [base+t], final obs [base+length] on the last row."""
    return {
        tr.EPISODE_ID: [episode] * length, tr.AGENT_ID: [agent] * length,
        tr.T: list(range(length)), tr.OBS: [[base + t] for t in range(length)],
        tr.FINAL_OBS: [None] * (length - 1) + [[base + length]],
        tr.ACTION_INDEX: [t % 2 for t in range(length)], tr.REWARD: [1.0] * length,
        tr.TERMINATED: [False] * (length - 1) + [True], tr.TRUNCATED: [False] * length,
        tr.EPISODE_LENGTH: [length] * length,
    }


def _table(*episodes: dict) -> pa.Table:
    cols = {k: [v for e in episodes for v in e[k]] for k in episodes[0]}
    return pa.table({**cols, tr.OBS: pa.array(cols[tr.OBS], pa.list_(pa.float32())),
                     tr.FINAL_OBS: pa.array(cols[tr.FINAL_OBS], pa.list_(pa.float32())),
                     tr.T: pa.array(cols[tr.T], pa.int32()),
                     tr.AGENT_ID: pa.array(cols[tr.AGENT_ID], pa.int32()),
                     tr.ACTION_INDEX: pa.array(cols[tr.ACTION_INDEX], pa.int32())})


def test_rllib_rows_shift_obs_within_episodes_and_end_on_final_obs():
    # rows out of order on purpose: conversion sorts by episode and step
    table = _table(_steps("b", 2, 10.0), _steps("a", 3, 0.0)).take([3, 0, 4, 2, 1])
    rows = to_rllib_rows(table).to_pydict()
    assert rows["eps_id"] == ["a", "a", "a", "b", "b"]
    assert rows["obs"] == [[0.0], [1.0], [2.0], [10.0], [11.0]]
    assert rows["new_obs"] == [[1.0], [2.0], [3.0], [11.0], [12.0]]
    assert rows["actions"] == [0, 1, 0, 0, 1]
    assert rows["terminateds"] == [False, False, True, False, True]
    multi = to_rllib_rows(_table(_steps("m", 1, 0.0, agent=0), _steps("m", 1, 5.0, agent=3)))
    assert multi.column("eps_id").to_pylist() == ["m", "m/3"]


def test_rllib_rows_refuse_partial_episodes_and_missing_columns():
    whole = _table(_steps("a", 3, 0.0))
    with pytest.raises(ValueError, match="not complete"):
        to_rllib_rows(whole.slice(1))  # starts at step 1
    with pytest.raises(ValueError, match="without final_obs"):
        to_rllib_rows(whole.slice(0, 2))  # ends before the last step
    with pytest.raises(ValueError, match="lack columns"):
        to_rllib_rows(whole.drop_columns([tr.FINAL_OBS]))


def test_action_accuracy_by_hand():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    assert action_accuracy(logits, np.array([0, 1, 1, 1])) == 0.75
    with pytest.raises(ValueError, match="one row of logits per action"):
        action_accuracy(logits, np.array([0]))


def test_frames_to_threshold_and_curves_on_a_grid():
    curve = [(0, 0.1), (100, 0.5), (200, 0.95), (300, 0.8)]
    assert frames_to_threshold(curve, 0.9) == 200.0
    assert frames_to_threshold(curve, 0.1) == 0.0  # the evaluation before training counts
    assert frames_to_threshold(curve, 0.99) is None
    assert on_grid(curve, [0, 50, 100, 299, 400]).tolist() == [0.1, 0.1, 0.5, 0.95, 0.8]
    assert np.isnan(on_grid([(10, 1.0)], [5])[0])
    grid, mean, std = mean_std([curve, [(0, 0.3), (150, 0.7), (250, 0.7)]], points=3)
    assert grid.tolist() == [0.0, 125.0, 250.0]  # up to the shorter curve's end
    assert mean.tolist() == pytest.approx([0.2, 0.4, 0.825])
    assert std.tolist() == pytest.approx([0.1, 0.1, 0.125])


def test_median_counts_unreached_seeds_as_slowest():
    assert median_or_none([100, 300, None]) == 300.0
    assert median_or_none([100, None, None]) is None
    assert median_or_none([100, 200]) == 150.0


def _result(method: str, seed: int, curve: list) -> dict:
    """A trial's result as the report reads it, from its evaluation curve."""
    return {"method": method, "seed": seed, "curve": curve,
            "eval_before": {"mean": curve[0][1]}, "eval_after": {"mean": curve[-1][1]}}


def test_summary_ratio_of_medians():
    results = [_result("bc-ppo", 0, [(0, 0.95)]),
               _result("bc-ppo", 1, [(0, 0.2), (2000, 0.91)]),
               _result("bc-ppo", 2, [(0, 0.2), (4000, 0.92)]),
               _result("scratch", 0, [(0, 0.0), (8000, 0.9)]),
               _result("scratch", 1, [(0, 0.0), (10000, 0.95)]),
               _result("scratch", 2, [(0, 0.0), (12000, 0.5)])]
    out = summarise(results, 0.9)
    assert out["methods"]["bc-ppo"]["seeds"] == {"0": 0.0, "1": 2000.0, "2": 4000.0}
    assert out["methods"]["scratch"]["median_frames"] == 10000.0
    assert out["bc_over_scratch"] == pytest.approx(0.2)
    assert out["methods"]["scratch"]["final_mean"] == pytest.approx((0.9 + 0.95 + 0.5) / 3)


def test_summary_bounds_the_ratio_when_scratch_never_reaches_the_threshold():
    results = [_result("bc-ppo", s, [(0, 0.1), (20000, 0.8)]) for s in (0, 1, 2)]
    results += [_result("bc-ppo-baseline", s, [(0, 0.1), (40000 * (s + 1), 0.8)])
                for s in (0, 1, 2)]
    # scratch reaches 0.75 on one seed of three: its median never does
    results += [_result("scratch", 0, [(0, 0.0), (90000, 0.75)]),
                _result("scratch", 1, [(0, 0.0), (100000, 0.1)]),
                _result("scratch", 2, [(0, 0.0), (100000, 0.2)])]
    out = summarise(results, 0.75, budget=100000)
    assert out["methods"]["scratch"]["median_frames"] is None
    assert "bc_over_scratch" not in out
    assert out["bc_over_scratch_below"] == pytest.approx(0.2)  # 20,000 of 100,000 frames
    assert out["baseline_over_scratch_below"] == pytest.approx(0.8)  # median 80,000
    # without a budget nothing is claimed
    assert "bc_over_scratch_below" not in summarise(results, 0.75)


def test_baseline_demonstrator_and_its_method_come_together():
    from policylm.jobs.bc_ppo import BcPpoConfig
    from policylm.platform.config import ConfigError

    with pytest.raises(ConfigError, match="baseline_demo_policy"):
        BcPpoConfig(methods=["bc-ppo", "bc-ppo-baseline", "scratch"]).validate()
    with pytest.raises(ConfigError, match="baseline_demo_policy"):
        BcPpoConfig(baseline_demo_policy=BOT, methods=["bc-ppo", "scratch"]).validate()
    BcPpoConfig(baseline_demo_policy=BOT, methods=["bc-ppo", "bc-ppo-baseline"]).validate()


def _view(cells: dict) -> np.ndarray:
    """A 7x7 egocentric view of empty floor (agent at (3, 6) facing up) with ``cells``."""
    image = np.zeros((7, 7, 3), dtype=np.int64)
    image[:, :, 0] = 1
    for (x, y), cell in cells.items():
        image[x, y] = cell
    return image


def test_bot_plans_from_the_view():
    key, goal = (5, 4, 0), (8, 1, 0)
    assert plan(_view({(3, 5): key}), carrying_kind=0) == PICKUP  # key in front
    assert plan(_view({(2, 6): key}), carrying_kind=0) == LEFT  # key on the left
    assert plan(_view({(4, 6): key}), carrying_kind=0) == RIGHT
    assert plan(_view({(3, 5): (4, 4, 2)}), carrying_kind=5) == TOGGLE  # locked door ahead
    assert plan(_view({(3, 5): (4, 4, 2)}), carrying_kind=0) is None  # no key: nothing to do
    assert plan(_view({(3, 3): goal}), carrying_kind=0) == FORWARD
    # the goal behind a wall row: walk around through the gap at x=0
    walls = {(x, 4): (2, 5, 0) for x in range(1, 7)} | {(3, 5): (2, 5, 0)}
    assert plan(_view({**walls, (3, 2): goal}), carrying_kind=0) == LEFT
    assert plan(_view({}), carrying_kind=0) is None


def test_bot_and_heuristic_solve_their_envs():
    from policylm.jobs.train_experts import evaluate_uri

    doorkey = evaluate_uri("MiniGrid-DoorKey-5x5-v0", {}, BOT, 10, 0)
    assert doorkey["min"] > 0.8  # every episode solved, quickly (return 1 - 0.9 * steps/250)
    cartpole = evaluate_uri("CartPole-v1", {}, "python:policylm.platform.envs.cartpole:"
                            "CartPoleHeuristic", 3, 0)
    assert cartpole["mean"] == 500.0


def test_python_scheme_errors_name_the_problem():
    minigrid = make_adapter("MiniGrid-DoorKey-5x5-v0")
    assert policy_from_uri(BOT + "?explore=0.5", minigrid).explore == 0.5
    with pytest.raises(PolicyError, match="write python:<module>:<Class>"):
        policy_from_uri("python:policylm.platform.envs.minigrid_bot", minigrid)
    with pytest.raises(PolicyError, match="has no Nope"):
        policy_from_uri("python:policylm.platform.envs.minigrid_bot:Nope", minigrid)
    with pytest.raises(PolicyError, match="plays MiniGrid envs"):
        policy_from_uri(BOT, make_adapter("CartPole-v1"))
    with pytest.raises(PolicyError, match="unexpected keyword"):
        policy_from_uri(BOT + "?speed=3", minigrid)


def test_evaluate_logits_records_every_position():
    cartpole = make_adapter("CartPole-v1")
    ev = evaluate_logits(cartpole, lambda obs: np.array([[0.0, 5.0]]), 2, seed=0, sample=False)
    assert len(ev.positions) == sum(ev.lengths) and len(ev.returns) == 2
    assert ev.returns == [float(n) for n in ev.lengths]  # reward 1 per step
    assert ev.positions[-1][0] > ev.positions[0][0]  # always pushing right moves the cart right


def test_loading_weights_checks_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no RLModule state"):
        load_policy(None, tmp_path, zero_value=True)
    a = {"w": np.zeros(2)}
    assert max_weight_diff(a, {"w": np.array([0.0, -0.5])}) == 0.5
    with pytest.raises(ValueError, match="weight sets differ"):
        max_weight_diff(a, {"v": np.zeros(2)})
