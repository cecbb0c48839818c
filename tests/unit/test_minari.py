"""Minari export (no jax) and import back into the trajectory schema."""

import numpy as np
import pytest

from policylm.platform.data import trajectories as tr
from policylm.platform.envs import make_adapter
from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MiniGrid-Empty-8x8-v0", "Pendulum-v1",
                                    "HalfCheetah-v5"])
def test_export_then_load_and_import(store, env_id):
    import minari

    from policylm.platform.data.minari_io import export_minari, import_minari

    adapter = make_adapter(env_id, **({"max_episode_steps": 20} if "Cheetah" in env_id else {}))
    (chunk,) = plan_chunks([("weak", "random:")], 3, 0, 3)
    steps = EpisodeRunner(adapter, 3).run(chunk.specs, "r")
    dataset_id = f"policylm/{env_id.lower().replace('-', '_')}-v0"
    export_minari(steps, dataset_id, adapter.action_space, env_id=env_id,
                  observation_space=adapter.observation_space)
    ds = minari.load_dataset(dataset_id)
    assert ds.total_episodes == 3 and ds.total_steps == steps.num_rows
    first = next(ds.iterate_episodes())
    ep0 = steps.filter(pa_equal(steps, "weak-p0-e00000"))
    assert np.allclose(first.observations[:-1], np.stack(ep0.column(tr.OBS).to_pylist()))
    assert np.allclose(first.observations[-1], ep0.column(tr.FINAL_OBS)[-1].as_py())
    assert first.rewards.tolist() == ep0.column(tr.REWARD).to_pylist()

    back = import_minari(dataset_id, "imp", skill="mixed")
    tr.validate_table(back, "import")
    assert back.num_rows == steps.num_rows
    assert sorted(back.column(tr.REWARD).to_pylist()) == sorted(steps.column(tr.REWARD).to_pylist())
    assert sorted(back.column(tr.ACTION_TEXT).to_pylist()) == \
        sorted(steps.column(tr.ACTION_TEXT).to_pylist())
    if env_id in ("CartPole-v1", "HalfCheetah-v5"):  # the env's own adapter (spaces match)
        assert sorted(back.column(tr.OBS_TEXT).to_pylist()) == \
            sorted(steps.column(tr.OBS_TEXT).to_pylist())
    if env_id == "HalfCheetah-v5":  # continuous actions come back as numeric action text
        assert back.column(tr.ACTION_TEXT)[0].as_py().startswith("<action>")


def test_import_missing_dataset_says_where_to_look(store):
    from policylm.platform.data.minari_io import import_minari

    with pytest.raises(tr.TrajectoryError, match="MINARI_DATASETS_PATH"):
        import_minari("policylm/nothing-v0", "imp")


def pa_equal(table, episode_id):
    import pyarrow.compute as pc

    return pc.equal(table.column(tr.EPISODE_ID), episode_id)


def test_relative_store_and_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    """MINARI_DATASETS_PATH=runs/minari (relative, as the docs write it) works both ways; an
    export that fails leaves no dataset behind, and an existing id is never overwritten."""
    from policylm.platform.data.minari_io import export_minari, import_minari

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "runs/minari")
    adapter = make_adapter("CartPole-v1")
    (chunk,) = plan_chunks([("weak", "random:")], 2, 0, 2)
    steps = EpisodeRunner(adapter, 2).run(chunk.specs, "r")
    import minari

    real = minari.create_dataset_from_buffers

    def crash_after_writing(*args, **kwargs):  # fault injection: Minari dies mid-export
        real(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", crash_after_writing)
    with pytest.raises(OSError, match="disk full"):
        export_minari(steps, "policylm/cartpole-v0", adapter.action_space, env_id="CartPole-v1")
    monkeypatch.setattr(minari, "create_dataset_from_buffers", real)
    store = tmp_path / "runs" / "minari"
    assert [p.name for p in store.iterdir()] == []  # nothing half-written, no temp store
    export_minari(steps, "policylm/cartpole-v0", adapter.action_space, env_id="CartPole-v1")
    assert import_minari("policylm/cartpole-v0", "imp").num_rows == steps.num_rows
    with pytest.raises(tr.TrajectoryError, match="already exists"):
        export_minari(steps, "policylm/cartpole-v0", adapter.action_space)
    assert sorted(p.name for p in store.iterdir()) == ["policylm"]
