"""Dataset transforms: episode selection (DuckDB), split, rtg over batches, chat rows, JSONL."""

import json

import pyarrow as pa
import pytest

from policylm.platform.data import datasets as dsx
from policylm.platform.data import trajectories as tr
from policylm.platform.envs import make_adapter
from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks


def episodes_table():
    rows = [
        # id, skill, length, return, terminated
        ("a", "weak", 10, 10.0, True),
        ("b", "weak", 30, 30.0, True),
        ("c", "expert", 500, 500.0, False),
        ("d", "medium", 150, 150.0, True),
    ]
    return pa.table({
        tr.RUN_ID: ["r"] * 4, tr.EPISODE_ID: [r[0] for r in rows], tr.ENV_ID: ["E"] * 4,
        tr.POLICY_URI: ["u"] * 4, tr.SKILL: [r[1] for r in rows], tr.SEED: [1, 2, 3, 4],
        tr.AGENT_ID: pa.array([0] * 4, pa.int32()),
        "length": pa.array([r[2] for r in rows], pa.int32()), "return": [r[3] for r in rows],
        tr.TERMINATED: [r[4] for r in rows], tr.TRUNCATED: [not r[4] for r in rows],
    }, schema=tr.EPISODE_TABLE_SCHEMA)


def ids(table):
    return table.column(tr.EPISODE_ID).to_pylist()


def test_select_episodes_by_bounds_skills_and_sql():
    ep = episodes_table()
    assert ids(dsx.select_episodes(ep, dsx.EpisodeFilter())) == ["a", "b", "c", "d"]
    assert ids(dsx.select_episodes(ep, dsx.EpisodeFilter(min_return=30))) == ["b", "c", "d"]
    assert ids(dsx.select_episodes(ep, dsx.EpisodeFilter(max_return=30, min_return=11))) == ["b"]
    assert ids(dsx.select_episodes(ep, dsx.EpisodeFilter(max_length=150))) == ["a", "b", "d"]
    assert ids(dsx.select_episodes(ep, dsx.EpisodeFilter(skills=["weak", "expert"]))) == \
        ["a", "b", "c"]
    where = dsx.EpisodeFilter(where="truncated OR (skill = 'weak' AND return > 15)")
    assert ids(dsx.select_episodes(ep, where)) == ["b", "c"]
    with pytest.raises(dsx.DatasetError, match="the where clause is SQL over the columns"):
        dsx.select_episodes(ep, dsx.EpisodeFilter(where="retrun > 3"))


def test_split_is_by_episode_and_stable():
    names = [f"ep-{i}" for i in range(2000)]
    splits = [dsx.split_of(n, 0.1) for n in names]
    assert splits == [dsx.split_of(n, 0.1) for n in names]
    share = splits.count("validation") / len(splits)
    assert 0.08 < share < 0.12
    assert set(dsx.split_of(n, 0.0) for n in names) == {"train"}
    # the agents of one arena share its split: a validation arena is never trained on
    arenas = [f"arena-p0-e{i:05d}" for i in range(200)]
    for a in arenas:
        assert {dsx.split_of(f"{a}-a{k:02d}", 0.3) for k in range(24)} == {dsx.split_of(a, 0.3)}
    assert {dsx.split_of(a, 0.3) for a in arenas} == {"train", "validation"}


@pytest.fixture(scope="module")
def steps():
    adapter = make_adapter("CartPole-v1")
    runner = EpisodeRunner(adapter, 2)
    (chunk,) = plan_chunks([("weak", "random:")], 3, 0, 3)
    return runner.run(chunk.specs, "r")


def test_add_rtg_on_shuffled_batch_matches_collector(steps):
    shuffled = steps.take(list(range(steps.num_rows))[::-1])
    out = dsx.add_rtg(shuffled, gamma=1.0, scale=10.0)
    assert out.column(tr.RTG).to_pylist() == [v / 10 for v in shuffled.column(tr.RTG).to_pylist()]
    disc = dsx.add_rtg(steps, gamma=0.5)
    first = steps.filter(pa.compute.equal(steps.column(tr.EPISODE_ID),
                                          steps.column(tr.EPISODE_ID)[0]))
    n = first.num_rows  # reward 1 per step: rtg_0 = sum 0.5^k, k < n
    assert disc.column(tr.RTG)[0].as_py() == pytest.approx(sum(0.5**k for k in range(n)))


def test_chat_rows_use_the_adapter_template(steps, tmp_path):
    adapter = make_adapter("CartPole-v1")
    rows = dsx.to_chat_rows(steps, adapter.system_text())
    first = rows.slice(0, 1).to_pylist()[0]
    obs = steps.column(tr.OBS_TEXT)[0].as_py()
    rtg = steps.column(tr.RTG)[0].as_py()
    assert first[dsx.PROMPT] == f"Target return: {int(rtg)}\nStep: 0\n{obs}"
    assert first[dsx.PROMPT] == adapter.user_text(rtg, 0, obs)
    assert first[dsx.COMPLETION] == steps.column(tr.ACTION_TEXT)[0].as_py()
    assert [m["role"] for m in first[dsx.MESSAGES]] == ["system", "user", "assistant"]
    n = dsx.write_chat_jsonl(rows, tmp_path / "d.jsonl")
    back = dsx.read_chat_jsonl(tmp_path / "d.jsonl")
    assert n == len(back) == steps.num_rows and back[0] == first[dsx.MESSAGES]
    assert dsx.rows_per_skill(rows) == {"weak": steps.num_rows}


def test_malformed_jsonl_names_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n{oops\n")
    with pytest.raises(dsx.DatasetError, match=r"bad.jsonl: line 2 is not"):
        dsx.read_chat_jsonl(f)
    f.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(dsx.DatasetError, match=r"line 1, message 0 needs role and content"):
        dsx.read_chat_jsonl(f)


def test_skill_fractions_and_row_sampling():
    episodes = pa.table({tr.EPISODE_ID: ["a", "b", "c", "d"], tr.SKILL: ["x", "x", "y", "y"],
                         "length": [300, 100, 40, 60]})
    split = {"a": "train", "b": "train", "c": "train", "d": "validation"}
    # x has 400 training steps -> 100/400; y has 40 (d is held out) -> capped at 1.0
    fr = dsx.row_fractions(episodes, split, cap=100)
    assert fr == {"x": 0.25, "y": 1.0}
    n = 4000
    batch = pa.table({tr.EPISODE_ID: [f"e{i % 40}" for i in range(n)], tr.T: list(range(n)),
                      tr.SKILL: ["x"] * (n // 2) + ["y"] * (n // 2), tr.ACTION_INDEX: [0] * n})
    kept = dsx.sample_rows(batch, {"x": 0.25})
    skills = kept.column(tr.SKILL).to_pylist()
    assert skills.count("y") == n // 2  # unlisted skills keep every row
    assert 0.2 * n / 2 < skills.count("x") < 0.3 * n / 2
    # the draw depends on (episode, step) only: the same rows survive in any order or split
    again = dsx.sample_rows(batch.slice(1000, 1000), {"x": 0.25})
    ts = set(kept.column(tr.T).to_pylist())
    assert set(again.column(tr.T).to_pylist()) == {t for t in ts if 1000 <= t < 2000}


def test_step_balanced_fractions_by_hand():
    # x: one 40-step episode -> buckets 0-7: 8, 8-15: 8, 16-31: 16, 32-39: 8 steps;
    # y: one 10-step episode -> 8 and 2 steps. Budget 2 skills x 10 rows = 20 over 6 cells
    # (2, 8, 8, 8, 8, 16): water level c with 2 + 5c = 20 -> c = 3.6
    episodes = pa.table({tr.EPISODE_ID: ["a", "b"], tr.SKILL: ["x", "y"], "length": [40, 10]})
    fr = dsx.row_fractions(episodes, {"a": "train", "b": "train"}, cap=10, balance="step")
    assert fr == pytest.approx({"x/0": 3.6 / 8, "x/1": 3.6 / 8, "x/2": 3.6 / 16, "x/3": 3.6 / 8,
                                "y/0": 3.6 / 8, "y/1": 1.0})
    assert [dsx.step_bucket(t) for t in (0, 7, 8, 15, 16, 31, 32, 64)] == [0, 0, 1, 1, 2, 2, 3, 4]
    assert dsx.water_level([1, 2], 10) == 2.0  # fewer rows than the budget: keep all
    # rows are drawn per (skill, bucket): bucket 2 of x keeps 3.6/16 of its rows on average
    n = 16000
    batch = pa.table({tr.EPISODE_ID: [f"e{i}" for i in range(n)], tr.T: [16 + i % 16
                                                                        for i in range(n)],
                      tr.SKILL: ["x"] * n, tr.ACTION_INDEX: [0] * n})
    assert abs(dsx.sample_rows(batch, fr, "step").num_rows / n - 3.6 / 16) < 0.02
    with pytest.raises(dsx.DatasetError, match="skill, step, action"):
        dsx.row_fractions(episodes, {"a": "train"}, cap=10, balance="time")


def test_action_balanced_fractions_by_hand():
    # training rows: x plays action 0 90 times, 1 8 times, 2 twice (episode c is held out);
    # y plays action 0 5 times. Cap 20 per skill: x's level c has 2 + 8 + c = 20 -> c = 10,
    # so action 0 keeps 10/90 of its rows and the rare actions all theirs; y keeps everything
    steps = pa.table({tr.EPISODE_ID: ["a"] * 100 + ["b"] * 5 + ["c"] * 7,
                      tr.SKILL: ["x"] * 100 + ["y"] * 5 + ["x"] * 7,
                      tr.ACTION_INDEX: [0] * 90 + [1] * 8 + [2] * 2 + [0] * 5 + [1] * 7})
    split = {"a": "train", "b": "train", "c": "validation"}
    counts = dsx.action_counts(steps, split)
    assert counts == {"x/0": 90, "x/1": 8, "x/2": 2, "y/0": 5}
    episodes = pa.table({tr.EPISODE_ID: ["a", "b"], tr.SKILL: ["x", "y"], "length": [100, 5]})
    fr = dsx.row_fractions(episodes, split, cap=20, balance="action", actions=counts)
    assert fr == pytest.approx({"x/0": 10 / 90, "x/1": 1.0, "x/2": 1.0, "y/0": 1.0})
    n = 9000  # rows are drawn per (skill, action): action 0 of x keeps 1/9 on average
    batch = pa.table({tr.EPISODE_ID: [f"e{i}" for i in range(n)], tr.T: [0] * n,
                      tr.SKILL: ["x"] * n, tr.ACTION_INDEX: [0] * (n - 10) + [2] * 10})
    kept = dsx.sample_rows(batch, fr, "action").column(tr.ACTION_INDEX).to_pylist()
    assert kept.count(2) == 10 and abs(kept.count(0) / (n - 10) - 1 / 9) < 0.02
    with pytest.raises(dsx.DatasetError, match="discrete actions"):
        dsx.action_counts(steps.set_column(2, tr.ACTION_INDEX, pa.array([-1] * 112)), split)


def test_group_partitions_by_hand():
    from policylm.jobs.build_dataset import group_partitions

    assert group_partitions(300, 40, 2) == 2  # small data: one partition per CPU
    assert group_partitions(300, 1, 8) == 1  # never more than the episodes
    assert group_partitions(1_000_001, 5_000, 4) == 11  # ceil(1,000,001 / 100,000)
    assert group_partitions(10**9, 10**6, 64) == 200  # Ray Data's default is the cap
    assert group_partitions(0, 0, 2) == 1


def test_played_targets_replace_return_to_go(steps):
    """target=played: each row's target is the one its step was played for (as the prompt
    wrote it, no gamma or scale); steps without one (a policy with no target) are refused."""
    played = [10.0 - 0.5 * i for i in range(steps.num_rows)]
    with_targets = steps.set_column(steps.schema.get_field_index(tr.TARGET_RETURN),
                                    tr.TARGET_RETURN, pa.array(played, pa.float64()))
    rows = dsx.episode_rows(with_targets, gamma=0.5, scale=10.0, target="played")
    assert rows.column(tr.RTG).to_pylist() == played
    assert dsx.episode_rows(with_targets, gamma=1.0).column(tr.RTG).to_pylist() == \
        steps.column(tr.RTG).to_pylist()  # return_to_go, the default, ignores them
    assert steps.column(tr.TARGET_RETURN).null_count == steps.num_rows  # random: has no target
    with pytest.raises(dsx.DatasetError, match=r"policy took none.*target=return_to_go"):
        dsx.episode_rows(steps, target="played")
    with pytest.raises(dsx.DatasetError, match="use return_to_go, played"):
        dsx.episode_rows(steps, target="best")
