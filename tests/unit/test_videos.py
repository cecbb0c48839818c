"""Evaluation videos: one GIF per target with a frame per step (plus the first), the episodes
the evaluation played on its first seeds, linked from the report; envs without frames are
refused by name."""

import imageio.v2 as imageio
import numpy as np
import pytest

from policylm.jobs.evaluate import EvaluateConfig, main
from policylm.platform.data import trajectories as tr
from policylm.platform.envs import EnvError, make_adapter
from policylm.platform.evaluation.videos import BAND, annotate, rgb_frame
from policylm.platform.rollout.runner import derive_seed
from policylm.platform.seeds import TEST_SEED


def test_evaluate_video_records_the_evaluated_episodes(tmp_path):
    result = main(EvaluateConfig(policy="random:", targets=[10, 50], episodes=3, video=2,
                                 num_workers=0, envs_per_worker=3, out=str(tmp_path / "ev")))
    steps = tr.read_trajectories(tmp_path / "ev" / "trajectories")
    episodes = tr.episode_table(steps).to_pylist()
    for label, target in (("target_10", 10), ("target_50", 50)):
        video = result["videos"][label]
        gif = imageio.mimread(video["path"])
        # the evaluation's first two seeds, played again: the same lengths and returns
        played = {e["seed"]: e for e in episodes
                  if e["policy_uri"].endswith(f"target_return={target}")}
        first = [played[derive_seed(TEST_SEED, k)] for k in range(2)]  # the default range
        assert video["lengths"] == [e["length"] for e in first]
        assert video["returns"] == [e["return"] for e in first]
        assert len(gif) == video["frames"] == sum(n + 1 for n in video["lengths"])
        assert gif[0].shape[:2] == (400 + BAND, 600)  # CartPole's picture under the band
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "[videos/target_10.gif](videos/target_10.gif)" in report


def test_frames_of_babyai_and_crafter_and_a_refusal():
    for env_id in ("BabyAI-MixedTrainLocal-goto-v0", "Crafter"):
        env = make_adapter(env_id).make_env()
        env.reset(seed=1)
        frame = rgb_frame(env)
        assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
        assert annotate(frame, "target 1").shape[1] >= 256
    arena = make_adapter("MettaGrid-Arena-v0").make_env()
    arena.reset(seed=0)
    with pytest.raises(EnvError, match="renders no rgb frames"):
        rgb_frame(arena)


def test_mujoco_frames_through_egl():
    """MuJoCo renders through OpenGL: with MUJOCO_GL=egl (Mesa's on this CPU) a frame comes
    back; without an OpenGL platform the error says what to set."""
    import os
    import subprocess
    import sys

    code = ("from policylm.platform.envs import make_adapter\n"
            "from policylm.platform.evaluation.videos import rgb_frame\n"
            "env = make_adapter('HalfCheetah-v5').make_env(); env.reset(seed=0)\n"
            "print(rgb_frame(env).shape)")
    env = {**os.environ, "MUJOCO_GL": "egl"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("(480, 480, 3)"), out.stderr[-500:]


def test_compare_video_records_policy_inputs_and_links_run_videos(tmp_path):
    from policylm.jobs.compare import CompareConfig
    from policylm.jobs.compare import main as compare

    main(EvaluateConfig(policy="random:", targets=[10], episodes=1, video=1, num_workers=0,
                        out=str(tmp_path / "ev")))
    out = compare(CompareConfig(inputs=[str(tmp_path / "ev"), "constant:right"],
                                labels=["evaluated", "right/1"], episodes=1, video=1,
                                num_workers=0, out=str(tmp_path / "cmp")))
    gif = imageio.mimread(tmp_path / "cmp" / "videos" / "right_1.gif")  # a file name
    right = out["summaries"]["right/1"]
    assert len(gif) == right["length_mean"] + 1  # always right: one episode, every step drawn
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "[videos/right_1.gif](videos/right_1.gif)" in report
    gif_path = tmp_path / "ev" / "videos" / "target_10.gif"
    assert f"- evaluated: [{gif_path}](../ev/videos/target_10.gif)" in report  # from report.md
