"""Return-conditioned datasets through Ray Data: rtg over shards, filters, split, outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policylm.jobs.build_dataset import BuildDatasetConfig, main
from policylm.jobs.collect import CollectConfig, PolicySource
from policylm.jobs.collect import main as collect_main
from policylm.platform.data import datasets as dsx
from policylm.platform.data import trajectories as tr
from policylm.platform.data.returns import returns_to_go

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def collected(ray_local, tmp_path_factory):
    """Many small files (chunk_size=1): every episode is its own shard."""
    out = tmp_path_factory.mktemp("collect")
    cfg = CollectConfig(policies=[PolicySource("weak", "random:"),
                                  PolicySource("good", "mix:constant:right?eps=0.5")],
                        episodes_per_policy=8, num_workers=2, envs_per_worker=2, chunk_size=1,
                        out=str(out))
    collect_main(cfg)
    return out


def read_split(path):
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(path).glob("*.parquet"))])


def test_dataset_rtg_split_and_jsonl(collected, tmp_path):
    result = main(BuildDatasetConfig(trajectories=str(collected), gamma=0.9, return_scale=10.0,
                                     validation_fraction=0.25, out=str(tmp_path / "ds")))
    steps = tr.read_trajectories(collected / "trajectories")
    train = read_split(tmp_path / "ds" / "dataset" / "train")
    val = read_split(tmp_path / "ds" / "dataset" / "validation")
    assert train.num_rows + val.num_rows == steps.num_rows
    train_ids = set(train.column(tr.EPISODE_ID).to_pylist())
    val_ids = set(val.column(tr.EPISODE_ID).to_pylist())
    assert train_ids and val_ids and not train_ids & val_ids  # split by episode, no leakage
    for split in (train, val):  # written in (episode, step) order, whatever the shuffle did
        keys = list(zip(split.column(tr.EPISODE_ID).to_pylist(), split.column(tr.T).to_pylist(),
                        strict=True))
        assert keys == sorted(keys)
    for e in val_ids:
        assert dsx.split_of(e, 0.25) == "validation"
    # rtg recomputed by Ray Data (groupby episode over 16 shards) equals the pure function
    both = pa.concat_tables([train, val])
    for ep_id in sorted(train_ids | val_ids)[:5]:
        rows = steps.filter(pa.compute.equal(steps.column(tr.EPISODE_ID), ep_id))
        expect = returns_to_go(rows.column(tr.REWARD).to_numpy(), 0.9, True) / 10.0
        got = both.filter(pa.compute.equal(both.column(tr.EPISODE_ID), ep_id)) \
            .sort_by(tr.T).column(dsx.TARGET_RETURN).to_numpy()
        assert got == pytest.approx(expect)
    lines = (tmp_path / "ds" / "dataset" / "train.jsonl").read_text().splitlines()
    assert len(lines) == train.num_rows
    msgs = json.loads(lines[0])["messages"]
    assert msgs[1]["content"].startswith("Target return: ") and msgs[2]["content"] in \
        ("left", "right")
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert stats["splits"]["train"]["rows"] == train.num_rows
    assert stats["episodes_kept"] == 16 and result["splits"]["validation"]["episodes"] == \
        len(val_ids)


def test_filters_and_stats_only(collected, tmp_path, capsys):
    episodes = tr.episode_table(tr.read_trajectories(collected / "trajectories"))
    good = [r for r in episodes.to_pylist() if r["skill"] == "good" and r["return"] > 12]
    out = tmp_path / "never"
    result = main(BuildDatasetConfig(trajectories=str(collected), skills=["good"],
                                     where="return > 12", stats_only=True, out=str(out)))
    assert result["stats"]["episodes_kept"] == len(good)
    assert result["stats"]["steps_kept"] == sum(r["length"] for r in good)
    assert not out.exists()  # stats only: nothing written
    assert '"episodes_kept"' in capsys.readouterr().out
    with pytest.raises(dsx.DatasetError, match="no episode of 16 passes the filters"):
        main(BuildDatasetConfig(trajectories=str(collected), min_return=10_000,
                                out=str(tmp_path / "empty")))
    assert not (tmp_path / "empty").exists()


def test_malformed_file_is_named_and_nothing_written(collected, tmp_path):
    bad_dir = tmp_path / "traj"
    bad_dir.mkdir()
    table = tr.read_trajectories(collected / "trajectories")
    pq.write_table(table.drop_columns([tr.ACTION_TEXT]), bad_dir / "broken.parquet")
    with pytest.raises(tr.TrajectoryError, match=r"broken\.parquet: missing column 'action_text'"):
        main(BuildDatasetConfig(trajectories=str(bad_dir), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_job_module_runs_with_its_own_local_ray(tmp_path):
    """`python -m policylm.jobs.collect` without RAY_ADDRESS starts local Ray and writes."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "policylm.jobs.collect", "--config",
         str(Path(__file__).parents[2] / "configs" / "collect_cartpole.yaml"),
         "episodes_per_policy=2", "num_workers=1", f"out={out}"],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["episodes"] == 4 and set(meta["skills"]) == {"random", "right"}
    assert f"outputs in {out}" in proc.stdout


def test_several_runs_of_envs_sharing_a_prompt(collected, tmp_path):
    """Two BabyAI tasks' runs (both hold episode ids expert-p0-e00000, ...) make one dataset
    with every step once; envs whose prompts differ are refused."""
    bot = "python:policylm.platform.envs.babyai_bot:BabyAIBot"
    runs = []
    for task in ("goto", "pickup"):
        out = tmp_path / task
        collect_main(CollectConfig(env_id=f"BabyAI-MixedTrainLocal-{task}-v0",
                                   policies=[PolicySource("expert", bot)], episodes_per_policy=3,
                                   num_workers=0, out=str(out)))
        runs.append(str(out))
    steps = sum(tr.read_trajectories(tr.trajectory_dir(r)).num_rows for r in runs)
    result = main(BuildDatasetConfig(trajectories=runs, validation_fraction=0.0,
                                     out=str(tmp_path / "ds")))
    rows = read_split(Path(result["dataset"]) / "train")
    assert rows.num_rows == steps
    ids = set(rows.column(tr.EPISODE_ID).to_pylist())
    assert ids == {f"{k}:expert-p0-e{e:05d}" for k in (0, 1) for e in range(3)}
    assert "turn left, turn right, go forward" in result["system"]
    with pytest.raises(dsx.DatasetError, match="whose prompts differ"):
        main(BuildDatasetConfig(trajectories=[runs[0], str(collected)], out=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()
    with pytest.raises(dsx.DatasetError, match="twice"):
        main(BuildDatasetConfig(trajectories=[runs[0], runs[0]], out=str(tmp_path / "y")))
