"""Crafter: text of a known state, the typed achievement columns, the Crafter score, and the
quality filter counted against hand-made episode tables."""

import json

import numpy as np
import pyarrow as pa
import pytest

from policylm.platform.data import trajectories as tr
from policylm.platform.data.datasets import DatasetError
from policylm.platform.envs.crafter import (
    ACHIEVEMENTS,
    INVENTORY,
    KINDS,
    crafter_json,
    crafter_score,
    encode_crafter,
)
from policylm.platform.evaluation.achievements import (
    QualityFilter,
    episodes_with_achievements,
    paired_achievement_difference,
    quality_stats,
    select_quality,
)


def _state():
    """A 9x7 view of grass, the agent in the middle facing down, 2 wood, collect_wood done."""
    view = np.full((9, 7), KINDS.index("grass"))
    view[4, 3] = KINDS.index("player")
    inv = np.zeros(len(INVENTORY), np.int64)
    inv[:4] = [9, 7, 3, 9]
    inv[INVENTORY.index("wood")] = 2
    ach = np.zeros(len(ACHIEVEMENTS), np.int8)
    ach[ACHIEVEMENTS.index("collect_wood")] = 1
    return {"view": view, "inventory": inv, "achievements": ach, "facing": 3}  # down


def test_text_of_a_known_state():
    obs = _state()
    obs["view"][4, 4] = KINDS.index("tree")         # adjacent, below: what it faces
    obs["view"][2, 3] = KINDS.index("water")        # 2 left
    obs["view"][7, 0] = KINDS.index("zombie")       # 3 right 3 up
    obs["view"][5, 4] = KINDS.index("tree")         # a farther tree is not listed again
    j = crafter_json(obs)
    assert j["vitals"] == {"health": 9, "food": 7, "drink": 3, "energy": 9}
    assert j["inventory"] == {"wood": 2}
    assert j["facing"] == {"direction": "down", "target": "tree"}
    assert [(n["kind"], n["distance"]) for n in j["nearby"]] == [
        ("tree", 1), ("water", 2), ("zombie", 6)]
    assert encode_crafter(obs) == (
        "Health 9, food 7, drink 3, energy 9. Inventory: wood 2. Facing tree (down). "
        "Nearby: tree 1 down; water 2 left; zombie 3 right 3 up. Achievements: collect_wood.")
    assert len(crafter_json(obs, max_entities=1)["nearby"]) == 1
    assert encode_crafter(obs, achievements="count").endswith("Achievements: 1 of 22.")


def test_achievement_text_option_is_recorded_and_checked():
    from policylm.platform.envs import make_adapter

    adapter = make_adapter("Crafter", length=10, achievements="count")
    assert adapter.text_options == {"max_entities": 8, "achievements": "count"}
    obs, _ = adapter.make_env().reset(seed=1)
    assert adapter.encode(obs).endswith("Achievements: 0 of 22.")
    with pytest.raises(ValueError, match=r"achievements='all'.*names, count"):
        make_adapter("Crafter", achievements="all")


def test_env_records_achievements_per_step():
    from policylm.platform.envs import make_adapter
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks

    adapter = make_adapter("Crafter", length=60)
    env = adapter.make_env()
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    assert np.array_equal(a["view"], b["view"])  # the same seed, the same world
    (chunk,) = plan_chunks([("r", "random:")], 2, 0, 2)
    steps = EpisodeRunner(adapter, 2).run(chunk.specs, "run")
    assert steps.num_rows == 120  # 60-step cap, truncated
    assert steps.column("truncated").to_pylist().count(True) == 2
    count = steps.column("achievement_count").to_pylist()
    unlocked = steps.column("achievements_unlocked").to_pylist()
    eps = steps.column(tr.EPISODE_ID).to_pylist()
    for e in set(eps):  # the count is the running total of what was unlocked
        rows = [i for i, x in enumerate(eps) if x == e]
        assert count[rows[-1]] == sum(len(unlocked[i]) for i in rows)


def test_crafter_score_of_known_rates():
    assert crafter_score({}) == 0.0
    assert crafter_score(dict.fromkeys(ACHIEVEMENTS, 1.0)) == pytest.approx(100.0)
    # one achievement always, the rest never: exp(ln(101) / 22) - 1
    assert crafter_score({"collect_wood": 1.0}) == pytest.approx(np.exp(np.log(101) / 22) - 1)
    half = crafter_score(dict.fromkeys(ACHIEVEMENTS, 0.5))
    assert half == pytest.approx(50.0)
    with pytest.raises(ValueError, match="unknown Crafter achievements"):
        crafter_score({"fly": 1.0})


def _steps(episodes):
    """Trajectory-like rows for ``[(episode, rewards, unlocked per step)]``."""
    rows = {c: [] for c in (tr.RUN_ID, tr.EPISODE_ID, tr.ENV_ID, tr.POLICY_URI, tr.SKILL,
                            tr.SEED, tr.AGENT_ID, tr.T, tr.REWARD, tr.TERMINATED, tr.TRUNCATED,
                            "achievements_unlocked")}
    for eid, rewards, unlocked in episodes:
        for t, (r, u) in enumerate(zip(rewards, unlocked, strict=True)):
            for c, v in ((tr.RUN_ID, "r"), (tr.EPISODE_ID, eid), (tr.ENV_ID, "Crafter"),
                         (tr.POLICY_URI, "random:"), (tr.SKILL, "s"), (tr.SEED, 0),
                         (tr.AGENT_ID, 0), (tr.T, t), (tr.REWARD, r),
                         (tr.TERMINATED, False), (tr.TRUNCATED, t == len(rewards) - 1),
                         ("achievements_unlocked", u)):
                rows[c].append(v)
    return pa.table(rows).cast(pa.schema([
        (tr.RUN_ID, pa.string()), (tr.EPISODE_ID, pa.string()), (tr.ENV_ID, pa.string()),
        (tr.POLICY_URI, pa.string()), (tr.SKILL, pa.string()), (tr.SEED, pa.int64()),
        (tr.AGENT_ID, pa.int32()), (tr.T, pa.int32()), (tr.REWARD, pa.float64()),
        (tr.TERMINATED, pa.bool_()), (tr.TRUNCATED, pa.bool_()),
        ("achievements_unlocked", pa.list_(pa.string()))]))


STEPS = [
    ("a", [1, 0, 1, 1], [["collect_wood"], [], ["place_table"], ["make_wood_pickaxe"]]),
    ("b", [1, 1], [["collect_wood"], ["eat_cow"]]),
    ("c", [0, 0, 0, 1, 0, 0], [[], [], [], ["collect_drink"], [], []]),
    ("d", [1, 1, 1, 1], [["collect_wood"], ["collect_sapling"], ["place_plant"], ["eat_cow"]]),
]


def test_filters_count_as_by_hand():
    episodes = episodes_with_achievements(_steps(STEPS))
    assert episodes.column("n_achievements").to_pylist() == [3, 2, 1, 4]
    assert episodes.column("achievements").to_pylist()[0] == [
        "collect_wood", "make_wood_pickaxe", "place_table"]

    def kept(**kw):
        return select_quality(episodes, QualityFilter(**kw), True).column(
            tr.EPISODE_ID).to_pylist()

    assert kept(min_achievements=3) == ["a", "d"]
    assert kept(min_reward=2.0) == ["a", "b", "d"]
    assert kept(max_turns=4) == ["a", "b", "d"]
    assert kept(max_turns=4, min_reward=3) == ["a", "d"]
    assert kept(achievement_types=["eat_cow", "collect_wood"]) == ["b", "d"]  # both
    assert kept(achievement_types=["eat_cow", "place_table", "collect_drink"],
                min_achievement_types=1) == ["a", "b", "c", "d"]
    stats = quality_stats(episodes, select_quality(episodes, QualityFilter(
        min_achievements=3), True))
    assert stats == {"total_episodes": 4, "high_quality": 2, "high_quality_share": 0.5,
                     "mean_achievements": 2.5, "mean_reward": 2.5, "kept": 2,
                     "kept_share": 0.5}


def test_filter_job_writes_a_collect_like_run(tmp_path, capsys):
    from policylm.jobs.filter import FilterConfig, main

    src = tmp_path / "src" / "trajectories"
    src.mkdir(parents=True)
    full = _full_rows(_steps(STEPS))
    tr.write_atomic(full, src / "part.parquet")
    out = main(FilterConfig(trajectories=str(tmp_path / "src"), min_achievements=3,
                            out=str(tmp_path / "best")))
    assert out["kept"] == 2 and json.loads(capsys.readouterr().out)["kept"] == 2
    back = tr.read_trajectories(tmp_path / "best" / "trajectories")
    assert sorted(set(back.column(tr.EPISODE_ID).to_pylist())) == ["a", "d"]
    assert main(FilterConfig(trajectories=str(src), stats_only=True))["total_episodes"] == 4
    plain = full.drop_columns(["achievements_unlocked"])
    tr.write_atomic(plain, tmp_path / "plain" / "p.parquet")
    with pytest.raises(DatasetError, match="no achievements_unlocked column"):
        main(FilterConfig(trajectories=str(tmp_path / "plain"), min_achievements=1,
                          stats_only=True))


def _full_rows(steps: pa.Table) -> pa.Table:
    """Fill the remaining trajectory columns with placeholders so files validate."""
    n = steps.num_rows
    extra = {tr.OBS: [[0.0]] * n, tr.OBS_TEXT: [""] * n, tr.OBS_JSON: ["{}"] * n,
             tr.ACTION: [[0.0]] * n, tr.ACTION_INDEX: [0] * n, tr.ACTION_TEXT: ["noop"] * n,
             tr.RTG: [0.0] * n, tr.EPISODE_RETURN: [0.0] * n, tr.EPISODE_LENGTH: [1] * n,
             tr.FINAL_OBS: [[0.0]] * n}
    table = steps
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    schema = tr.trajectory_schema([pa.field("achievements_unlocked", pa.list_(pa.string()))])
    return table.select(schema.names).cast(schema)


def steps_survival(steps):
    """A user metric for compare's eval_fn: mean episode length and share truncated."""
    import pyarrow.compute as pc

    ends = steps.filter(pc.or_(steps.column(tr.TERMINATED), steps.column(tr.TRUNCATED)))
    return {"survived": float(np.mean(ends.column(tr.TRUNCATED).to_pylist()))}


def test_compare_reports_achievements_score_and_user_metrics(tmp_path):
    from policylm.jobs.compare import CompareConfig, main

    full = _full_rows(_steps(STEPS))
    for name, keep in (("good", ["a", "d"]), ("poor", ["b", "c"])):
        import pyarrow.compute as pc

        part = full.filter(pc.is_in(full.column(tr.EPISODE_ID), pa.array(keep)))
        tr.write_atomic(part, tmp_path / name / "trajectories" / "p.parquet")
    out = main(CompareConfig(inputs=[str(tmp_path / "good"), str(tmp_path / "poor")],
                             labels=["good", "poor"], eval_fn=f"{__name__}:steps_survival",
                             out=str(tmp_path / "cmp")))
    good, poor = out["summaries"]["good"], out["summaries"]["poor"]
    assert good["achievements"]["achievement_rate"] == 1.0  # 3 and 4 achievements
    assert poor["achievements"]["achievement_rate"] == 0.0  # 2 and 1
    assert good["achievements"]["success_rates"]["collect_wood"] == 1.0
    assert poor["achievements"]["success_rates"]["eat_cow"] == 0.5
    # a: wood, table, pickaxe; d: wood, sapling, plant, cow -> 6 achievements, rates 1 and 0.5
    want = crafter_score({"collect_wood": 1.0, "place_table": 0.5, "make_wood_pickaxe": 0.5,
                          "collect_sapling": 0.5, "place_plant": 0.5, "eat_cow": 0.5})
    assert good["achievements"]["crafter_score"] == pytest.approx(want)
    assert good["custom"] == {"survived": 1.0}
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "Crafter score" in report and "steps_survival" in report
    assert "achievements per episode" in report and "Crafter score (bootstrap s.e.)" in report
    assert (tmp_path / "cmp" / "achievements.png").stat().st_size > 0
    with pytest.raises(ValueError, match="cannot be loaded"):
        main(CompareConfig(inputs=[str(tmp_path / "good"), str(tmp_path / "poor")],
                           eval_fn="nowhere:fn", out=str(tmp_path / "cmp2")))


def test_paired_achievement_difference_by_hand():
    """Achievements per episode paired by seed; the Crafter score difference on the seeds both
    played, with a seeded bootstrap standard error; no score for names Crafter lacks."""
    a = {(1, 0): ["collect_wood"], (2, 0): [], (3, 0): ["collect_wood"]}
    b = {(1, 0): ["collect_wood", "place_table"], (2, 0): ["collect_wood"],
         (3, 0): ["collect_wood", "place_table", "eat_cow"], (9, 0): ["collect_coal"]}
    d = paired_achievement_difference(a, b, draws=500)
    # per pair: 2-1, 1-0, 3-1 -> mean 4/3, sample std 0.577 -> s.e. 1/3
    assert d["achievements"]["pairs"] == 3
    assert d["achievements"]["mean"] == pytest.approx(4 / 3)
    assert d["achievements"]["se"] == pytest.approx(np.std([1, 1, 2], ddof=1) / np.sqrt(3))
    # b: wood 3/3, table 2/3, cow 1/3; a: wood 2/3 (seed 9 is b's alone: left out)
    want = crafter_score({"collect_wood": 1.0, "place_table": 2 / 3, "eat_cow": 1 / 3}) \
        - crafter_score({"collect_wood": 2 / 3})
    score = d["crafter_score"]
    assert score["pairs"] == 3 and score["mean"] == pytest.approx(want)
    assert score["se"] > 0 and score == paired_achievement_difference(a, b, draws=500)[
        "crafter_score"]
    other = paired_achievement_difference({(1, 0): ["win"]}, {(1, 0): ["win", "key"]})
    assert other["achievements"]["mean"] == 1.0 and "crafter_score" not in other


def test_same_seed_and_actions_give_the_same_episode():
    """Two envs of one seed stepped with the same actions stay identical (crafter's objects
    were hashed by address, and its despawn draw followed the set's order: they drifted)."""
    from policylm.platform.envs.crafter import CrafterEnv

    envs = [CrafterEnv(length=800), CrafterEnv(length=800)]
    obs = [e.reset(seed=7)[0] for e in envs]
    rng = np.random.default_rng(0)
    for t in range(800):
        a = int(rng.choice([1, 2, 3, 4, 5]))  # moves and "do": wander, hit what is in front
        steps = [e.step(a) for e in envs]
        assert all(np.array_equal(steps[0][0][k], steps[1][0][k]) for k in obs[0]), t
        assert steps[0][1:4] == steps[1][1:4]
        if steps[0][2] or steps[0][3]:
            break
    worlds = [sorted((type(o).__name__, tuple(o.pos)) for o in e.env._world.objects)
              for e in envs]
    assert worlds[0] == worlds[1]
