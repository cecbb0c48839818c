"""Benchmark suites: BALROG's scoring by hand, scores of known trajectories, held-out seeds."""

import json

import numpy as np
import pytest

from policylm.jobs.benchmark import BenchmarkConfig, main
from policylm.platform.config import ConfigError
from policylm.platform.evaluation.suites import get_suite, progression, score, suite_scores
from policylm.platform.rollout.runner import derive_seed

BOT = "python:policylm.platform.envs.babyai_bot:BabyAIBot"


def test_balrog_scoring_by_hand():
    assert score([1, 0, 0, 1]) == {"episodes": 4, "score": 50.0, "se": 25.0}  # sd 0.5 / 2
    assert score([]) == {"episodes": 0, "score": None, "se": None}
    assert score([1.0])["se"] is None
    # BALROG's published standard errors follow from its estimator over 50 BabyAI episodes
    for successes, se in ((4, 3.8), (10, 5.7), (18, 6.8)):
        s = score([1.0] * successes + [0.0] * (50 - successes))
        assert s["score"] == pytest.approx(2 * successes) and round(s["se"], 1) == se
    assert progression("success", 0.3) == 1.0 and progression("success", 0.0) == 0.0
    assert progression("achievements", 0.0, achievements=11) == 0.5
    with pytest.raises(ValueError, match="achievement count"):
        progression("achievements", 1.0)
    suite = get_suite("balrog-babyai")
    pooled = suite_scores(suite, {"goto": [1, 1], "open": [0, 0, 0]})
    assert pooled["tasks"]["goto"]["score"] == 100.0 and pooled["tasks"]["pickup"]["episodes"] == 0
    assert pooled["overall"]["score"] == pytest.approx(40.0)  # 2 of 5 episodes, pooled
    with pytest.raises(ValueError, match="known: balrog-babyai"):
        get_suite("babyai")


def test_scores_of_known_policies(tmp_path, play_returns):
    uri = f"{BOT}?eps=0.9"
    # seed 20251: four episodes per task where the noisy bot both fails and succeeds
    got = main(BenchmarkConfig(policy=uri, episodes=4, tasks=["goto", "putnext"], seed=20251,
                               num_workers=0, envs_per_worker=2, out=str(tmp_path / "b")))
    suite = {t.name: t for t in get_suite("balrog-babyai").tasks}
    seeds = [derive_seed(20251, e) for e in range(4)]
    expected = {name: [float(r > 0) for r in play_returns(suite[name].env_id, uri, seeds)]
                for name in ("goto", "putnext")}
    assert 0 < np.mean(expected["goto"] + expected["putnext"]) < 1  # some fail, some succeed
    for name, values in expected.items():
        assert got["tasks"][name]["score"] == pytest.approx(100 * np.mean(values))
    pooled = expected["goto"] + expected["putnext"]
    assert got["overall"]["score"] == pytest.approx(100 * np.mean(pooled))
    assert got["overall"]["episodes"] == 8 and got["invalid_rate"] is None
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["overall"] == got["overall"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "Llama-3.1-8B-Instruct | 36.0 ± 6.8" in report
    assert (tmp_path / "b" / "scores.png").is_file()
    spin = main(BenchmarkConfig(policy="constant:turn left", episodes=2, tasks=["goto"],
                                num_workers=0, out=str(tmp_path / "spin")))
    assert spin["overall"]["score"] == 0.0  # turning in place never reaches the object

    # the expert bot against the noisy one on the same seeds: the paired difference by hand
    expert = main(BenchmarkConfig(policy=BOT, episodes=4, tasks=["goto", "putnext"], seed=20251,
                                  num_workers=0, baseline=str(tmp_path / "b"),
                                  out=str(tmp_path / "e")))
    for name, values in [*expected.items(), ("overall", pooled)]:
        d = 100 * (1 - np.asarray(values))  # the expert solves every seed
        got_d = (expert["baseline"]["tasks"][name] if name != "overall"
                 else expert["baseline"]["overall"])
        assert got_d["pairs"] == len(d) and got_d["mean"] == pytest.approx(d.mean())
        assert got_d["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))
    assert "## Against the baseline" in (tmp_path / "e" / "report.md").read_text()
    for bad, match in ((dict(seed=7), "seed=20251, this run has seed=7"),
                       (dict(tasks=["open"]), "did not play open"),
                       (dict(baseline=str(tmp_path / "nowhere")), "not a finished benchmark")):
        kw = dict(policy=BOT, episodes=1, tasks=["goto"], seed=20251, num_workers=0,
                  baseline=str(tmp_path / "b"), out=str(tmp_path / "refused"))
        with pytest.raises(ConfigError, match=match):
            main(BenchmarkConfig(**{**kw, **bad}))
        assert not (tmp_path / "refused").exists()  # refused before anything was written


def test_held_out_seeds_are_checked(tmp_path):
    first = main(BenchmarkConfig(policy=BOT, episodes=2, tasks=["goto"], num_workers=0,
                                 video=1, out=str(tmp_path / "a")))
    assert first["overall"]["score"] == 100.0 and first["held_out"] is False
    # the first seed played again on video: the bot's episode, one frame per step and the first
    import imageio.v2 as imageio

    video = first["videos"]["goto"]
    frames = imageio.mimread(video["path"])
    assert video["returns"][0] > 0 and len(frames) == video["lengths"][0] + 1
    assert "[videos/goto.gif](videos/goto.gif)" in (tmp_path / "a" / "report.md").read_text()
    played = str(tmp_path / "a" / "tasks" / "goto")
    with pytest.raises(ValueError, match="seeds are in train_data"):
        main(BenchmarkConfig(policy=BOT, episodes=2, tasks=["goto"], num_workers=0,
                             train_data=[played], out=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()  # refused before anything was written
    other = main(BenchmarkConfig(policy=BOT, episodes=2, tasks=["goto"], num_workers=0,
                                 train_data=[played], seed=7, video=1, video_frames=2,
                                 out=str(tmp_path / "c")))
    assert other["held_out"] is True
    assert len(imageio.mimread(other["videos"]["goto"]["path"])) == 2  # the first 2 frames
    with pytest.raises(ConfigError, match="tasks"):
        BenchmarkConfig(tasks=["fly"]).validate()


def test_env_options_reach_every_task_and_the_report_says_so(tmp_path):
    from policylm.platform.data import trajectories as tr

    got = main(BenchmarkConfig(policy=f"{BOT}?eps=0.5", episodes=2, tasks=["putnext", "open"],
                               env_options={"memory": True}, num_workers=0,
                               out=str(tmp_path / "m")))
    assert got["overall"]["episodes"] == 4
    for task in ("putnext", "open"):
        steps = tr.read_trajectories(tmp_path / "m" / "tasks" / task / "trajectories")
        texts = steps.column(tr.OBS_TEXT).to_pylist()
        assert any("Out of view, seen before:" in t for t in texts), task
    assert "env_options={'memory': True}" in (tmp_path / "m" / "report.md").read_text()
    plain = main(BenchmarkConfig(policy=f"{BOT}?eps=0.5", episodes=1, tasks=["putnext"],
                                 num_workers=0, out=str(tmp_path / "p")))
    assert "env_options" not in (tmp_path / "p" / "report.md").read_text()
    assert plain["overall"]["episodes"] == 1


def test_crafter_scores_the_share_of_achievements(tmp_path):
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.achievements import episodes_with_achievements

    got = main(BenchmarkConfig(policy="random:", suite="balrog-crafter", episodes=2,
                               env_options={"length": 60}, num_workers=0,
                               out=str(tmp_path / "c")))
    steps = tr.read_trajectories(tmp_path / "c" / "tasks" / "default" / "trajectories")
    counts = episodes_with_achievements(steps).column("n_achievements").to_pylist()
    assert len(counts) == 2 and sum(counts) > 0  # random play unlocks some in 60 steps
    assert got["overall"]["score"] == pytest.approx(100 * np.mean(counts) / 22)
