"""Evaluation maths by hand: ranks, Spearman, per-target metrics, trajectory summaries."""

import numpy as np
import pyarrow as pa
import pytest

from policylm.platform.data import trajectories as tr
from policylm.platform.evaluation.metrics import (
    ranks,
    spearman,
    summarize_steps,
    target_label,
    target_metrics,
)
from policylm.platform.evaluation.reports import markdown_table


def test_ranks_with_ties():
    assert ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks y = [1, 3, 2]: d = [0, -1, 1], rho = 1 - 6*2/(3*8) = 0.5
    assert spearman([1, 2, 3], [5, 9, 7]) == pytest.approx(0.5)
    # one swap of neighbours in 5: 1 - 6 * 2 / (5 * 24) = 0.9; two: 0.8 exactly (the bar)
    assert spearman([25, 100, 250, 500, 600], [19, 116, 106, 163, 123]) == 0.8
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == 0.9
    assert spearman([1, 2], [3, 3]) is None and spearman([1], [2]) is None


def episodes(rows):
    n = len(rows)
    return pa.table({
        tr.RUN_ID: ["r"] * n, tr.EPISODE_ID: [f"e{i}" for i in range(n)], tr.ENV_ID: ["E"] * n,
        tr.POLICY_URI: ["u"] * n, tr.SKILL: [r[0] for r in rows], tr.SEED: list(range(n)),
        tr.AGENT_ID: pa.array([0] * n, pa.int32()),
        "length": pa.array([int(r[1]) for r in rows], pa.int32()),
        "return": [float(r[1]) for r in rows], tr.TERMINATED: [True] * n,
        tr.TRUNCATED: [False] * n}, schema=tr.EPISODE_TABLE_SCHEMA)


def test_target_metrics():
    table = episodes([("target_10", 8), ("target_10", 12), ("target_100", 50),
                      ("target_100", 70), ("target_12.5", 1)])
    m = target_metrics(table, [10, 100, 12.5])
    assert target_label(12.5) == "target_12.5"
    assert m["targets"]["target_10"]["mean"] == 10.0 and m["targets"]["target_100"]["std"] == 10.0
    # means by target: 10 -> 10, 12.5 -> 1, 100 -> 60: ranks x [1,2,3], y [2,1,3] -> rho 0.5
    assert m["spearman_means"] == pytest.approx(0.5)


def test_target_metrics_over_arenas():
    """Agents of one arena share its seed: the s.e. is over arena means, not agents."""
    table = episodes([("target_0", 0), ("target_0", 2), ("target_0", 4), ("target_0", 6),
                      ("target_4", 5), ("target_4", 5), ("target_4", 3), ("target_4", 3)])
    table = table.set_column(table.schema.get_field_index(tr.SEED), tr.SEED,
                             pa.array([7, 7, 8, 8, 7, 7, 8, 8], pa.int64()))
    table = table.set_column(table.schema.get_field_index(tr.AGENT_ID), tr.AGENT_ID,
                             pa.array([0, 1, 0, 1, 0, 1, 0, 1], pa.int32()))
    m = target_metrics(table, [0, 4])
    low, high = m["targets"]["target_0"], m["targets"]["target_4"]
    # target 0: arena means 1 and 5 -> mean 3, sample std 2.828 / sqrt(2) = 2.0; over the four
    # agents: sample std 2.582 / sqrt(4) = 1.291
    assert low["arenas"] == 2 and low["mean"] == 3.0 and low["se"] == pytest.approx(2.0)
    assert low["agent_se"] == pytest.approx(np.std([0, 2, 4, 6], ddof=1) / 2)
    # target 4: arena means 5 and 3 -> s.e. 1.0
    assert high["se"] == pytest.approx(1.0) and m["spearman_means"] == pytest.approx(1.0)
    single = target_metrics(episodes([("target_0", 1), ("target_0", 3)]), [0])
    assert "arenas" not in single["targets"]["target_0"]  # one agent per seed: as before
    assert single["targets"]["target_0"]["se"] == pytest.approx(1.0)


def test_summarize_steps():
    steps = pa.table({
        tr.RUN_ID: ["r"] * 5, tr.EPISODE_ID: ["a", "a", "a", "b", "b"], tr.ENV_ID: ["E"] * 5,
        tr.POLICY_URI: ["u"] * 5, tr.SKILL: ["s"] * 5, tr.SEED: [0] * 5,
        tr.AGENT_ID: pa.array([0] * 5, pa.int32()), tr.T: pa.array([0, 1, 2, 0, 1], pa.int32()),
        tr.REWARD: [0.0, 0.0, 1.0, 0.0, 0.0], tr.TERMINATED: [False, False, True, False, True],
        tr.TRUNCATED: [False] * 5, tr.ACTION_TEXT: ["left", "left", "right", "left", "forward"]})
    s = summarize_steps(steps, success_return=1.0)  # success: return >= 1
    assert s["episodes"] == 2 and s["return"]["mean"] == 0.5 and s["length_mean"] == 2.5
    assert s["reward_per_step"] == pytest.approx(1 / 5) and s["success_rate"] == 0.5
    # hits [1, 0]: sample std 0.7071 / sqrt(2) = 0.5
    assert s["success_rate_se"] == pytest.approx(0.5) and s["return"]["se"] == pytest.approx(0.5)
    assert s["actions"] == {"forward": 0.2, "left": 0.6, "right": 0.2}


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, 2.5], [None, "x"]]).splitlines() == [
        "| a | b |", "|---|---|", "| 1 | 2.50 |", "| n/a | x |"]


def test_demo_quality_bar_by_hand():
    from policylm.jobs.demo import quality

    def ev(means, rho, se=10.0):
        return {"targets": {f"target_{t}": {"target": float(t), "count": 4, "mean": m, "se": se}
                            for t, m in means.items()}, "spearman_means": rho}

    training = {"median": 103.5}
    expert = {"mean": 445.0, "se": 15.0}
    ok = quality(ev({25: 20.0, 100: 60.0, 250: 140.0, 500: 300.0}, 1.0), training, expert)
    assert ok["passed"] and ok["spearman"]["passed"] and ok["highest_target"]["passed"]
    assert ok["highest_target"]["target"] == 500.0 and ok["highest_target"]["mean"] == 300.0
    # the highest target's mean against the best skill's: 300 - 445, s.e. sqrt(10² + 15²)
    best = ok["best_data"]
    assert not best["passed"] and best["difference"] == -145.0 and best["bar"] == 445.0
    assert abs(best["se"] - 18.027756) < 1e-6
    # three targets are too few even with a perfect rank correlation; 470 at the highest
    # target reaches the best skill's 445
    few = quality(ev({25: 20.0, 100: 60.0, 600: 470.0}, 1.0), training, expert)
    assert not few["spearman"]["passed"] and not few["passed"] and few["best_data"]["passed"]
    assert few["best_data"]["difference"] == 25.0
    # a high mean at a lower target does not count: only the highest target's mean does
    dip = quality(ev({25: 20.0, 100: 60.0, 500: 470.0, 600: 440.0}, 0.8), training, expert)
    assert not dip["best_data"]["passed"] and dip["best_data"]["target"] == 600.0
    # an unknown standard error stays unknown
    assert quality(ev({25: 20.0, 500: 470.0}, 1.0, None), training, expert)[
        "best_data"]["se"] is None
    # the highest target below the training median fails the second criterion
    low = quality(ev({25: 20.0, 100: 30.0, 250: 40.0, 500: 100.0}, 1.0), training, expert)
    assert low["spearman"]["passed"] and not low["highest_target"]["passed"]
    assert not low["passed"]
    # a weak correlation fails the first
    flat = quality(ev({25: 200.0, 100: 160.0, 250: 140.0, 500: 150.0}, -0.4), training, expert)
    assert not flat["spearman"]["passed"] and flat["highest_target"]["passed"]


def test_paired_difference_by_hand():
    from policylm.platform.evaluation.metrics import paired_difference, success_threshold

    a = {(1, 0): 10.0, (2, 0): 20.0, (3, 0): 30.0, (9, 0): 99.0}
    b = {(1, 0): 12.0, (2, 0): 21.0, (3, 0): 36.0}  # seed 9 has no pair
    d = paired_difference(a, b)  # differences 2, 1, 6: mean 3, sample std sqrt(7) / sqrt(3)
    assert d["pairs"] == 3 and d["mean"] == pytest.approx(3.0)
    assert d["se"] == pytest.approx(np.sqrt(7) / np.sqrt(3))
    assert d["within_noise"] is True  # 3 < 2 x 1.53
    # every pair equal: no difference (s.e. 0) is within noise; a constant shift is not
    same = paired_difference(a, a)
    assert (same["mean"], same["se"], same["within_noise"]) == (0.0, 0.0, True)
    shifted = paired_difference(a, {k: v + 1.0 for k, v in a.items()})
    assert (shifted["mean"], shifted["se"], shifted["within_noise"]) == (1.0, 0.0, False)
    assert paired_difference(a, {}) == {"pairs": 0, "mean": None, "se": None,
                                        "within_noise": None}
    assert success_threshold("CartPole-v1") == 475.0
    assert 0 < success_threshold("MiniGrid-Empty-8x8-v0") < 0.01
    assert success_threshold("Pendulum-v1") is None
