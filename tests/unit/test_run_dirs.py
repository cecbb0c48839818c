"""Runs never mix: a non-empty out= is refused unless overwrite=true (replaced) or resume=true
(continued, only when the stored settings match), for every job."""

import importlib
import json

import pytest

from policylm.platform.config import ConfigError, config_from_dict


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    from policylm.jobs.collect import CollectConfig, main

    out = tmp_path_factory.mktemp("traj") / "collect"
    main(CollectConfig(env_options={"max_episode_steps": 10}, episodes_per_policy=2,
                       num_workers=0, envs_per_worker=2, out=str(out)))
    return str(out)


# each job with the least config that passes its validation
JOBS = {
    "collect": {}, "build_dataset": {"trajectories": "TRAJ"},
    "evaluate": {"policy": "random:"}, "compare": {"inputs": ["TRAJ", "TRAJ"]},
    "filter": {"trajectories": "TRAJ"}, "import_minari": {"dataset_id": "policylm/runs-v0"},
    "merge": {"adapter": "nowhere"}, "train_experts": {}, "bc_ppo": {}, "demo": {},
    "self_improve": {}, "sweep": {"policy": "random:"}, "sft": {"dataset": "DS"},
    "grpo": {"dataset": "DS"}, "grpo_episodes": {},
    "benchmark": {"policy": "random:"}, "train_suite": {}, "control": {},
}


def test_every_job_with_a_run_directory_is_checked():
    from policylm.cli import JOBS as COMMANDS

    # serve writes no run directory; export-minari writes into the Minari store (by dataset id)
    assert set(COMMANDS.values()) - {"serve", "export_minari"} == set(JOBS)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_refuses_a_used_out_and_changes_nothing(job, trajectories, tmp_path,
                                                         monkeypatch):
    module = importlib.import_module(f"policylm.jobs.{job}")
    if job == "import_minari":  # a real dataset in a local store, so the import gets that far
        from policylm.platform.data import trajectories as tr
        from policylm.platform.data.minari_io import export_minari
        from policylm.platform.envs import make_adapter

        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
        space = make_adapter("CartPole-v1").action_space
        steps = tr.read_trajectories(f"{trajectories}/trajectories")
        export_minari(steps, "policylm/runs-v0", space, env_id="CartPole-v1")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run\n")
    dataset = tmp_path / "ds" / "dataset" / "train"  # sft and grpo look for a split first
    dataset.mkdir(parents=True)
    (dataset / "part.parquet").write_text("")
    values = {k: [trajectories] * len(v) if isinstance(v, list) else
              {"TRAJ": trajectories, "DS": str(tmp_path / "ds")}.get(v, v) if isinstance(v, str)
              else v for k, v in JOBS[job].items()}
    cfg = config_from_dict(module.CONFIG, {**values, "out": str(out)})
    with pytest.raises(ConfigError, match="overwrite=true"):
        module.main(cfg)
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_open_run_resumes_only_the_same_settings(tmp_path):
    from policylm.jobkit.runs import open_run
    from policylm.jobs.collect import CollectConfig

    out = tmp_path / "run"
    first = open_run("collect", CollectConfig(episodes_per_policy=3, out=str(out)))
    (first / "trajectories").mkdir()
    assert json.loads((out / "run.json").read_text())["job"] == "collect"
    same = open_run("collect", CollectConfig(episodes_per_policy=3, out=str(out), resume=True))
    assert same == first and (out / "trajectories").is_dir()  # kept
    with pytest.raises(ConfigError, match=r"settings differ .*\(episodes_per_policy\)"):
        open_run("collect", CollectConfig(episodes_per_policy=4, out=str(out), resume=True))
    with pytest.raises(ConfigError, match="holds a collect run, not a evaluate run"):
        from policylm.jobs.evaluate import EvaluateConfig

        open_run("evaluate", EvaluateConfig(out=str(out), resume=True))
    replaced = open_run("collect", CollectConfig(episodes_per_policy=4, out=str(out),
                                                 overwrite=True))
    assert sorted(p.name for p in replaced.iterdir()) == ["config.yaml", "run.json"]
    with pytest.raises(ConfigError, match="holds no run to continue"):
        open_run("collect", CollectConfig(out=str(tmp_path / "empty"), resume=True))


def test_resume_may_change_how_workers_run_but_not_how_many(tmp_path):
    """A section's run keys (train.max_failures, train.cpus_per_worker) may change on resume;
    its other keys may not, and the error names them dotted."""
    from policylm.jobkit.runs import open_run
    from policylm.jobs.sft import SftJobConfig
    from policylm.platform.training.scaling import TrainConfig

    out = tmp_path / "sft"
    open_run("sft", SftJobConfig(dataset="d", out=str(out)))
    open_run("sft", SftJobConfig(dataset="d", out=str(out), resume=True,
                                 train=TrainConfig(max_failures=5, cpus_per_worker=2)))
    with pytest.raises(ConfigError, match=r"settings differ .*\(train\.num_workers\)"):
        open_run("sft", SftJobConfig(dataset="d", out=str(out), resume=True,
                                     train=TrainConfig(num_workers=2)))


def test_collect_twice_into_one_out(tmp_path):
    """A second collect with other settings is refused; resumed with the same settings it
    plays nothing again; overwritten, it reports only its own episodes."""
    from policylm.jobs.collect import CollectConfig, main

    def cfg(**kw):
        return CollectConfig(env_options={"max_episode_steps": 10}, num_workers=0,
                             envs_per_worker=2, out=str(tmp_path / "c"), **kw)

    first = main(cfg(episodes_per_policy=4))
    assert first["episodes"] == 4 and first["episodes_played"] == 4
    with pytest.raises(ConfigError, match="resume=true"):
        main(cfg(episodes_per_policy=2))
    again = main(cfg(episodes_per_policy=4, resume=True))
    assert again["episodes_played"] == 0 and again["skills"] == first["skills"]
    fresh = main(cfg(episodes_per_policy=2, overwrite=True))
    assert fresh["episodes"] == 2
    files = sorted(p.name for p in (tmp_path / "c" / "trajectories").iterdir())
    assert files == ["weak-p0-c00000.parquet"]


def test_evaluate_twice_into_one_out(tmp_path):
    from policylm.jobs.evaluate import EvaluateConfig, main

    def cfg(**kw):
        return EvaluateConfig(policy="random:", env_options={"max_episode_steps": 10},
                              episodes=2, num_workers=0, envs_per_worker=2,
                              out=str(tmp_path / "e"), **kw)

    main(cfg(targets=[1, 2]))
    with pytest.raises(ConfigError, match="overwrite=true"):
        main(cfg(targets=[3]))
    second = main(cfg(targets=[3], overwrite=True))
    assert list(second["targets"]) == ["target_3"]  # only its own target


def test_ray_train_names_one_run_alike(tmp_path, monkeypatch):
    """Ray Train restores whatever (storage_path, name) holds: runs in different directories
    (even of the same name), and a run that replaced another (overwrite), get different names;
    a resumed run (reached by a relative or an absolute path) gets the same one."""
    from pathlib import Path

    from policylm.jobkit.ray_train import train_run_name
    from policylm.jobkit.runs import open_run
    from policylm.jobs.collect import CollectConfig

    monkeypatch.chdir(tmp_path)
    first = train_run_name("sft", open_run("sft", CollectConfig(out="a/run")))
    assert first.startswith("sft-run-")
    assert train_run_name("sft", tmp_path / "a" / "run") == first
    resumed = open_run("sft", CollectConfig(out=str(tmp_path / "a" / "run"), resume=True))
    assert train_run_name("sft", resumed) == train_run_name("sft", Path("a/run")) == first
    other = train_run_name("sft", open_run("sft", CollectConfig(out="b/run")))
    assert other.startswith("sft-run-") and other != first
    assert train_run_name("grpo", tmp_path / "a" / "run") != first
    replaced = open_run("sft", CollectConfig(out="a/run", overwrite=True))
    assert train_run_name("sft", replaced) != first
    # a directory without a run record: named by its path
    assert train_run_name("sft", tmp_path / "my run!") == train_run_name("sft", Path("my run!"))
    assert train_run_name("sft", tmp_path / "my run!").startswith("sft-my-run-")
    # a run recorded before run ids, resumed: it keeps the name its checkpoints are under
    import json

    (tmp_path / "old").mkdir()
    record = {"job": "sft", "fingerprint": "x"}
    (tmp_path / "old" / "run.json").write_text(json.dumps(record))
    assert train_run_name("sft", tmp_path / "old") == "sft"


def test_overwrite_replaces_only_a_policylm_run(tmp_path):
    """overwrite=true removes a directory only when it holds a policylm run (its run.json);
    a directory of anything else (``out=.``, a mistyped path) is refused and keeps its files."""
    from policylm.jobkit.runs import open_run
    from policylm.jobs.collect import CollectConfig

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("a user's file\n")
    with pytest.raises(ConfigError, match=r"holds no policylm run.*nothing was deleted") as err:
        open_run("collect", CollectConfig(out=str(mine), overwrite=True))
    assert str(mine) in str(err.value)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    (mine / "run.json").write_text("{}\n")  # a run.json that is not one of ours
    with pytest.raises(ConfigError, match="holds no policylm run"):
        open_run("collect", CollectConfig(out=str(mine), overwrite=True))
    assert sorted(p.name for p in mine.iterdir()) == ["run.json", "thesis.tex"]
    # a real earlier run (of any job) is replaced
    run = tmp_path / "run"
    open_run("evaluate", CollectConfig(out=str(run)))
    (run / "trajectories").mkdir()
    replaced = open_run("collect", CollectConfig(out=str(run), overwrite=True))
    assert sorted(p.name for p in replaced.iterdir()) == ["config.yaml", "run.json"]
    assert json.loads((run / "run.json").read_text())["job"] == "collect"


def test_overwrite_of_a_user_directory_fails_with_one_error_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    out = subprocess.run([str(Path(sys.executable).parent / "policylm"), "collect",
                          f"out={mine}", "overwrite=true", "num_workers=0"],
                         capture_output=True, text=True)
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert out.returncode != 0 and len(errors) == 1, out.stderr[-2000:]
    assert str(mine) in errors[0] and "nothing was deleted" in errors[0]
    assert "Traceback" not in out.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
