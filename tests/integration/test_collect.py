"""Parallel collection with rollout actors: determinism, metadata, a killed actor, experts."""

import json
from pathlib import Path

import pytest
import yaml

from policylm.jobs.collect import CollectConfig, PolicySource, main
from policylm.platform.config import load_config
from policylm.platform.data import trajectories as tr
from policylm.platform.envs import make_adapter
from policylm.platform.policies import PolicyError, policy_from_uri

pytestmark = pytest.mark.integration


def sorted_steps(run_dir):
    table = tr.read_trajectories(Path(run_dir) / "trajectories").drop_columns([tr.RUN_ID])
    return table.sort_by([(tr.EPISODE_ID, "ascending"), (tr.T, "ascending")])


def cfg(out, **kw):
    base = dict(policies=[PolicySource("weak", "random:"),
                          PolicySource("right", "mix:constant:right?eps=0.3")],
                episodes_per_policy=6, num_workers=2, envs_per_worker=2, chunk_size=2,
                out=str(out))
    base.update(kw)
    return CollectConfig(**base)


def test_parallel_equals_in_process_and_metadata_is_right(ray_local, tmp_path):
    par = main(cfg(tmp_path / "par"))
    seq = main(cfg(tmp_path / "seq", num_workers=0, envs_per_worker=3))
    assert sorted_steps(par["run_dir"]).equals(sorted_steps(seq["run_dir"]))
    meta = json.loads((tmp_path / "par" / "metadata.json").read_text())
    episodes = tr.episode_table(tr.read_trajectories(tmp_path / "par" / "trajectories"))
    assert meta["episodes"] == 12 and set(meta["skills"]) == {"weak", "right"}
    for skill in ("weak", "right"):
        rets = [r for r, s in zip(episodes.column("return").to_pylist(),
                                  episodes.column(tr.SKILL).to_pylist(), strict=True) if s == skill]
        assert meta["skills"][skill]["episodes"] == 6
        assert meta["skills"][skill]["return"]["mean"] == pytest.approx(sum(rets) / 6)
        assert meta["skills"][skill]["return"]["max"] == max(rets)
    assert (tmp_path / "par" / "config.yaml").is_file()


def test_killed_actor_restarts_and_data_is_exact(ray_local, tmp_path):
    clean = main(cfg(tmp_path / "clean"))
    killed = main(cfg(tmp_path / "killed", kill_after_episodes=3))
    marker = tmp_path / "killed" / "trajectories" / ".fault-injected"
    assert marker.is_file(), "the fault was not injected: no worker died"
    steps = sorted_steps(killed["run_dir"])
    ids = tr.episode_table(tr.read_trajectories(tmp_path / "killed" / "trajectories"))
    ep_ids = ids.column(tr.EPISODE_ID).to_pylist()
    assert len(ep_ids) == len(set(ep_ids)) == 12  # exactly the requested episodes, no duplicate
    assert steps.equals(sorted_steps(clean["run_dir"]))  # and exactly the same data
    leftovers = [p.name for p in (tmp_path / "killed" / "trajectories").iterdir()
                 if p.name.endswith(".tmp")]
    assert leftovers == []


def test_experts_are_ranked_and_usable(experts, tmp_path):
    info = experts["experts"]
    assert set(info) == {"weak", "expert"}
    assert info["weak"]["iteration"] == 1 and info["expert"]["iteration"] == 3
    for e in info.values():
        assert e["uri"].startswith("rllib://") and Path(e["uri"][8:]).is_dir()
    collect_yaml = Path(experts["run_dir"]) / "collect.yaml"
    loaded = load_config(CollectConfig, collect_yaml, ["episodes_per_policy=3", "envs_per_worker=3",
                                                       f"out={tmp_path / 'c'}"])
    result = main(loaded)
    assert result["episodes"] == 6
    steps = tr.read_trajectories(tmp_path / "c" / "trajectories")
    assert set(steps.column(tr.POLICY_URI).to_pylist()) == {e["uri"] for e in info.values()}
    # an RLlib CartPole checkpoint refuses an env of another shape, naming the URI
    with pytest.raises(PolicyError, match=r"rllib://.*expects observations of size 4"):
        policy_from_uri(info["expert"]["uri"], make_adapter("MiniGrid-Empty-8x8-v0"))
    assert yaml.safe_load(collect_yaml.read_text())["env_id"] == "CartPole-v1"


def test_babyai_bot_demos_on_two_actors(ray_local, tmp_path):
    """Each actor's bot keeps one replica env per slot: two actors with two envs each give the
    same episodes as one process, the expert solves every one, eps weakens it."""
    bot = "python:policylm.platform.envs.babyai_bot:BabyAIBot"
    kw = dict(env_id="BabyAI-MixedTrainLocal-putnext-v0",
              policies=[PolicySource("expert", bot), PolicySource("weak", f"{bot}?eps=0.7")],
              episodes_per_policy=8)
    par = main(cfg(tmp_path / "par", **kw))
    seq = main(cfg(tmp_path / "seq", num_workers=0, envs_per_worker=3, **kw))
    assert sorted_steps(par["run_dir"]).equals(sorted_steps(seq["run_dir"]))
    episodes = tr.episode_table(tr.read_trajectories(tmp_path / "par" / "trajectories"))
    returns = {s: [r for r, k in zip(episodes.column("return").to_pylist(),
                                     episodes.column("skill").to_pylist(), strict=True) if k == s]
               for s in ("expert", "weak")}
    assert len(returns["expert"]) == 8 and min(returns["expert"]) > 0
    assert sum(returns["weak"]) / 8 < sum(returns["expert"]) / 8 - 0.1
