"""Trajectory schema, atomic files, validation errors, and the in-process runner."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policylm.platform.data import trajectories as tr
from policylm.platform.envs import make_adapter
from policylm.platform.rollout.runner import (
    EpisodeRunner,
    derive_seed,
    plan_chunks,
    plan_groups,
    read_chunk,
    write_chunk,
)


@pytest.fixture(scope="module")
def cartpole():
    return make_adapter("CartPole-v1")


def run(adapter, policies, episodes, num_envs, seed=0, chunk=4):
    runner = EpisodeRunner(adapter, num_envs)
    tables = [runner.run(c.specs, "r") for c in plan_chunks(policies, episodes, seed, chunk)]
    return pa.concat_tables(tables)


def test_plan_is_deterministic_and_ids_unique():
    a = plan_chunks([("weak", "random:"), ("good", "constant:right")], 5, 3, 2)
    b = plan_chunks([("weak", "random:"), ("good", "constant:right")], 5, 3, 2)
    assert a == b and [c.chunk_id for c in a][:3] == ["weak-p0-c00000", "weak-p0-c00001",
                                                        "weak-p0-c00002"]
    ids = [s.episode_id for c in a for s in c.specs]
    assert len(ids) == len(set(ids)) == 10
    assert a[0].specs[0].seed == derive_seed(3, 0, 0) != derive_seed(4, 0, 0)


def test_group_plan_shares_env_seeds_and_samples_apart(cartpole):
    """plan_groups: G episodes per env seed under one policy, each with its own sampling stream:
    a group starts from one state, its episodes differ, and the plan replays exactly however
    it is chunked."""
    plan = plan_groups("random:", "it0003", 2, 3, 7, 4)
    assert [c.chunk_id for c in plan] == ["it0003-c00000", "it0003-c00001"]
    specs = [s for c in plan for s in c.specs]
    assert [s.episode_id for s in specs][:4] == ["it0003-s00000-g1", "it0003-s00000-g2",
                                                 "it0003-s00000-g3", "it0003-s00001-g1"]
    assert [s.seed for s in specs] == [derive_seed(7, 0)] * 3 + [derive_seed(7, 1)] * 3
    assert [s.stream for s in specs] == [1, 2, 3] * 2
    assert specs[0].policy_seed() == derive_seed(derive_seed(7, 0), "stream", 1)
    assert plan_chunks([("a", "random:")], 1, 7, 1)[0].specs[0].policy_seed() == \
        derive_seed(7, 0, 0)  # stream 0: the env seed, as before

    def play(chunk_size, num_envs):
        runner = EpisodeRunner(cartpole, num_envs)
        return pa.concat_tables([runner.run(c.specs, "r") for c in plan_groups(
            "random:", "it0003", 2, 3, 7, chunk_size)])

    steps = play(4, 4)
    first = steps.filter(pa.compute.equal(steps.column(tr.T), 0))
    obs = first.column(tr.OBS).to_pylist()
    assert obs[0] == obs[1] == obs[2] != obs[3]  # a group starts from its seed's state
    actions = [tuple(steps.filter(pa.compute.equal(steps.column(tr.EPISODE_ID), e))
                     .column(tr.ACTION_INDEX).to_pylist()) for e in
               first.column(tr.EPISODE_ID).to_pylist()]
    assert len(set(actions[:3])) == 3  # ... and samples apart
    assert steps.equals(play(6, 1))  # however chunked and batched


def test_runner_rows_rtg_and_independence_from_batching(cartpole):
    one = run(cartpole, [("weak", "random:")], 6, num_envs=1)
    many = run(cartpole, [("weak", "random:")], 6, num_envs=4)
    assert one.drop_columns([]).equals(many)  # same seeds -> same data, however batched
    tr.validate_table(one, "mem")
    eps = tr.episode_table(one)
    assert eps.num_rows == 6
    for ep in eps.to_pylist():
        rows = one.filter(pa.compute.equal(one.column(tr.EPISODE_ID), ep["episode_id"]))
        r = rows.column(tr.REWARD).to_numpy()
        assert rows.column(tr.T).to_pylist() == list(range(ep["length"]))
        assert rows.column(tr.RTG).to_numpy().tolist() == np.cumsum(r[::-1])[::-1].tolist()
        assert rows.column(tr.EPISODE_RETURN)[0].as_py() == ep["return"] == r.sum()
        final = rows.column(tr.FINAL_OBS).to_pylist()
        assert final[:-1] == [None] * (ep["length"] - 1) and len(final[-1]) == 4
        assert ep["terminated"] and not ep["truncated"]  # random CartPole falls well before 500


def test_truncation_is_kept_apart(cartpole):
    short = make_adapter("CartPole-v1", max_episode_steps=5)
    table = run(short, [("good", "constant:left")], 1, 1)
    # constant left falls after ~9 steps; the 5-step limit truncates first
    assert table.column(tr.TRUNCATED).to_pylist() == [False] * 4 + [True]
    assert not any(table.column(tr.TERMINATED).to_pylist())


def test_atomic_write_and_resume(tmp_path, cartpole):
    from policylm.actors.rollout import RolloutGroup, RolloutSpec

    (chunk,) = plan_chunks([("weak", "random:")], 3, 0, 3)
    group = RolloutGroup(RolloutSpec("CartPole-v1", num_envs=2, out_dir=str(tmp_path)), 0)
    first = group.run([chunk])
    steps = group.steps_taken()
    again = group.run([chunk])  # the file exists: read back, not replayed
    assert first == again and group.steps_taken() == steps
    assert group.episodes_played == 3
    assert [p.name for p in tmp_path.iterdir()] == ["weak-p0-c00000.parquet"]
    assert read_chunk(tmp_path, chunk).num_rows == steps
    # a file under the chunk's name from another plan (another policy) is not taken as done
    (other,) = plan_chunks([("weak", "constant:left")], 3, 0, 3)
    with pytest.raises(tr.TrajectoryError, match="does not plan"):
        read_chunk(tmp_path, other)
    write_chunk(EpisodeRunner(cartpole, 2).run(other.specs, "r"), tmp_path, other)
    assert read_chunk(tmp_path, other).column(tr.POLICY_URI)[0].as_py() == "constant:left"


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.parquet"
    tr.write_atomic(pa.table({"x": [1, 2]}), target)

    def half_write(table, where):
        with open(where, "wb") as f:
            f.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(tr.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        tr.write_atomic(pa.table({"x": [3]}), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    assert pq.read_table(target).column("x").to_pylist() == [1, 2]


def test_validation_names_file_row_and_field(tmp_path, cartpole):
    table = run(cartpole, [("weak", "random:")], 1, 1)
    f = tmp_path / "missing.parquet"
    pq.write_table(table.drop_columns([tr.REWARD]), f)
    with pytest.raises(tr.TrajectoryError, match=r"missing.parquet: missing column 'reward'"):
        tr.read_trajectories(f)
    rewards = table.column(tr.REWARD).to_pylist()
    rewards[2] = None
    nulls = table.set_column(table.schema.get_field_index(tr.REWARD), tr.REWARD,
                             pa.array(rewards, pa.float64()))
    g = tmp_path / "nulls.parquet"
    pq.write_table(nulls, g)
    with pytest.raises(tr.TrajectoryError, match=r"nulls.parquet: row 2, field 'reward' is null"):
        tr.read_trajectories(g)
    typed = table.set_column(table.schema.get_field_index(tr.T), tr.T,
                             pa.array([str(v) for v in table.column(tr.T).to_pylist()]))
    h = tmp_path / "typed.parquet"
    pq.write_table(typed, h)
    with pytest.raises(tr.TrajectoryError, match=r"typed.parquet: column 't' has type string"):
        tr.read_trajectories(h)
    (tmp_path / "junk.parquet").write_text("junk")
    with pytest.raises(tr.TrajectoryError, match=r"junk\.parquet: not a readable Parquet file"):
        tr.read_trajectories(tmp_path / "junk.parquet")
    with pytest.raises(tr.TrajectoryError, match="no such trajectory"):
        tr.read_trajectories(tmp_path / "nope")


def test_stats_by_hand():
    s = tr.return_stats([1.0, 2.0, 3.0, 10.0])
    # squared deviations 9 + 4 + 1 + 36 = 50: sample variance 50/3, s.e. sqrt(50/3) / 2
    assert s == {"count": 4, "mean": 4.0, "median": 2.5, "min": 1.0, "max": 10.0,
                 "std": pytest.approx(np.std([1, 2, 3, 10])),
                 "se": pytest.approx(np.sqrt(50 / 3) / 2)}
    assert tr.return_stats([5.0])["se"] is None


def test_env_extras_get_typed_columns():
    import gymnasium as gym

    class Scored(gym.Env):
        observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.zeros(1, np.float32), {}

        def step(self, action):
            self.t += 1
            info = {"achievements": ["wood"] * self.t, "score": self.t * 10}
            return np.zeros(1, np.float32), 1.0, self.t == 3, False, info

    adapter = make_adapter("scored", make_env=Scored)
    adapter.extra_fields = [pa.field("achievements", pa.list_(pa.string())),
                            pa.field("score", pa.int64())]
    adapter.info_extras = lambda info: {"achievements": info["achievements"],
                                        "score": info["score"]}
    (chunk,) = plan_chunks([("w", "random:")], 1, 0, 1)
    table = EpisodeRunner(adapter, 1).run(chunk.specs, "r")
    assert table.schema.field("score").type == pa.int64()
    assert table.column("score").to_pylist() == [10, 20, 30]
    assert table.column("achievements").to_pylist()[-1] == ["wood"] * 3
    tr.validate_table(table, "extras")


def test_balanced_chunk_size_keeps_every_actor_busy():
    from policylm.platform.rollout.runner import balanced_chunk_size

    assert balanced_chunk_size(10, 2, 10) == 5    # one target's 10 episodes: 5 per actor
    assert balanced_chunk_size(40, 2, 10) == 10   # four targets: envs_per_worker caps it
    assert balanced_chunk_size(11, 2, 10) == 6    # ceil(11 / 2)
    assert balanced_chunk_size(3, 4, 8) == 1      # fewer episodes than actors: one each
    assert balanced_chunk_size(10, 1, 4) == 4     # one actor, or none (in-process): unchanged
    assert balanced_chunk_size(10, 0, 4) == 4
    with pytest.raises(ValueError, match="envs_per_worker must be >= 1"):
        balanced_chunk_size(10, 2, 0)
