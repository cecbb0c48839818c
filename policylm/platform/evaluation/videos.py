"""Evaluation videos: episodes played again in this process by the same policy on the same env
seeds as the evaluation, every frame rendered by the env (``rgb_array``) with the target, the
step and the running return drawn above it, written as one GIF per target (imageio).

Envs that render rgb frames: CartPole (pygame), MiniGrid and BabyAI, Crafter, MuJoCo (through
OpenGL: ``MUJOCO_GL=egl``). Others (MettaGrid here) are refused by name before anything is
played.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs import EnvAdapter, EnvError, format_number

BAND = 18  # pixels of the text band above each frame
MIN_WIDTH = 256  # small frames are scaled up (nearest) to at least this width


def rgb_frame(env: Any) -> np.ndarray:
    """The env's current picture as an ``(H, W, 3)`` uint8 array; an :class:`EnvError` when
    the env renders none."""
    base = getattr(env, "unwrapped", env)
    modes = getattr(base, "metadata", {}).get("render_modes", [])
    if getattr(base, "render_mode", None) != "rgb_array" and "rgb_array" in modes:
        base.render_mode = "rgb_array"  # classic control, MiniGrid, MuJoCo read it per call
    render = getattr(env, "render", None)
    spec = getattr(env, "spec", None)
    try:
        frame = render() if "rgb_array" in modes and render is not None else None
    except Exception as err:  # a renderer's own error (OpenGL, display), named
        raise EnvError(f"{spec.id if spec else type(base).__name__} could not render a frame "
                       f"({type(err).__name__}: {err}); MuJoCo renders through OpenGL: start the "
                       "job with MUJOCO_GL=egl (GPU, or Mesa's EGL on a CPU)") from err
    if frame is None or np.ndim(frame) != 3:
        raise EnvError(f"{spec.id if spec else type(base).__name__} renders no rgb frames, so "
                       "it cannot be recorded; video= works with envs that render rgb_array "
                       "(CartPole, MiniGrid/BabyAI, Crafter, MuJoCo)")
    return np.asarray(frame, np.uint8)[..., :3]


def annotate(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` scaled up to at least :data:`MIN_WIDTH` wide, below a band holding ``text``."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    if image.width < MIN_WIDTH:
        k = -(-MIN_WIDTH // image.width)
        image = image.resize((image.width * k, image.height * k), Image.NEAREST)
    out = Image.new("RGB", (image.width, image.height + BAND), "white")
    out.paste(image, (0, BAND))
    ImageDraw.Draw(out).text((4, 3), text, fill="black")
    return np.asarray(out)


class FrameRecorder(gym.Wrapper):
    """Keeps an annotated frame after every reset and step: ``target R  step t  return G``."""

    def __init__(self, env: gym.Env, target: float | None, max_frames: int):
        super().__init__(env)
        self.target, self.max_frames = target, max_frames
        self.frames: list[np.ndarray] = []
        self.t, self.total = 0, 0.0

    def _keep(self) -> None:
        if len(self.frames) < self.max_frames:
            label = "" if self.target is None else f"target {format_number(self.target)}  "
            self.frames.append(annotate(rgb_frame(self.env), f"{label}step {self.t}  "
                                        f"return {format_number(self.total)}"))

    def reset(self, **kwargs: Any) -> Any:
        out = self.env.reset(**kwargs)
        self.t, self.total = 0, 0.0
        self._keep()
        return out

    def step(self, action: Any) -> Any:
        obs, reward, term, trunc, info = self.env.step(action)
        self.t, self.total = self.t + 1, self.total + float(reward)
        self._keep()
        return obs, reward, term, trunc, info


def record(adapter: EnvAdapter, policy_uri: str, target: float | None, seeds: list[int],
           path: str | Path, fps: int = 15, max_frames: int = 1000) -> dict:
    """Play one episode per seed with ``policy_uri`` (its target already set) in this process
    and write their frames, one episode after the other, to the GIF at ``path``; at most
    ``max_frames`` frames per episode (the episode still plays to its end). Returns
    ``{"path", "frames", "lengths", "returns"}``."""
    import imageio.v2 as imageio

    from policylm.platform.rollout.runner import EpisodeRunner, EpisodeSpec

    probe = adapter.make_env()
    probe.reset(seed=seeds[0] if seeds else 0)
    rgb_frame(probe)  # refuses an env without frames before anything plays
    probe.close()
    recorders: list[FrameRecorder] = []

    def make() -> gym.Env:
        recorders.append(FrameRecorder(adapter.make_env(), target, max_frames))
        return recorders[-1]

    runner = EpisodeRunner(dataclasses.replace(adapter, make_env=make), 1)
    frames, lengths, returns = [], [], []
    for k, seed in enumerate(seeds):
        steps = runner.run([EpisodeSpec(f"video-{k}", policy_uri, "video", seed)], "video")
        frames += recorders[0].frames
        recorders[0].frames = []
        lengths.append(steps.num_rows)
        returns.append(float(np.sum(steps.column("reward").to_numpy())))
    runner.close()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(str(path), frames, duration=1000 / fps, loop=0)
    return {"path": str(path), "frames": len(frames), "lengths": lengths, "returns": returns}


def video_section(videos: dict[str, dict]) -> str:
    """A report's video section: per label (a target, a task) its GIF and episodes' returns;
    empty without videos."""
    if not videos:
        return ""
    lines = ["", "## Videos", ""]
    for label, v in videos.items():
        name = Path(v["path"]).name
        lines.append(f"- {label}: [videos/{name}](videos/{name}), returns "
                     f"{', '.join(format_number(r) for r in v['returns'])}")
    return "\n".join(lines) + "\n"
