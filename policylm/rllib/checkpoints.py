"""RLlib checkpoints as policies: ``rllib://<checkpoint dir>`` in the URI table
(``policylm.platform.policies.uri``) loads here, where Ray may be imported.

:func:`rllib_logits_fn` returns ``logits_fn(obs[B, D]) -> logits[B, n]`` after checking that the
checkpoint fits the env; :func:`policylm.platform.policies.base.network_policy` turns it into
actions (a continuous module's output is its Gaussian's mean and log standard deviation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs import EnvAdapter
from policylm.platform.policies.network import LogitsFn, action_width, check_fit


def rllib_module_dir(path: str | Path) -> Path:
    """The RLModule directory inside an RLlib checkpoint (algorithm or module checkpoint)."""
    p = Path(path)
    for cand in (p, p / "learner_group/learner/rl_module/default_policy",
                 p / "rl_module/default_policy", p / "default_policy"):
        if (cand / "module_state.pkl").exists() or (cand / "module_state.pt").exists():
            return cand
    raise FileNotFoundError(
        f"{p} is not an RLlib checkpoint (no learner_group/learner/rl_module/default_policy); "
        "pass the directory that Algorithm.save_to_path wrote"
    )


def rllib_logits_fn(path: str, adapter: EnvAdapter) -> LogitsFn:
    """Load the RLModule of an RLlib checkpoint; its ``forward_inference`` gives the logits."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    return checked_logits_fn(RLModule.from_checkpoint(str(rllib_module_dir(path))), adapter, path)


def checked_logits_fn(module: Any, adapter: EnvAdapter, path: str) -> LogitsFn:
    """``logits_fn`` of a loaded (or live, in training) RLModule, after checking that it fits
    ``adapter``'s env (``path`` names it in errors)."""
    obs_dim = int(np.prod(module.observation_space.shape))
    try:
        width = action_width(module.action_space)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    check_fit(path, obs_dim, width, adapter, module.action_space)
    fn = module_logits_fn(module)
    if isinstance(module.action_space, gym.spaces.Box):
        dist = module.get_inference_action_dist_cls().__name__
        if dist != "TorchDiagGaussian":
            raise ValueError(f"{path}: a continuous module with {dist} outputs; rllib:// plays "
                             "diagonal Gaussians (RLlib's PPO default) only")
        return unsquashed(fn, module.action_space)
    return fn


def unsquashed(fn: LogitsFn, space: gym.spaces.Box) -> LogitsFn:
    """A Gaussian's ``[mean, log std]`` in RLlib's normalised action range ([-1, 1], its
    default ``normalize_actions``) mapped to the bounds of ``space``, as RLlib's
    ``unsquash_action`` maps the actions it samples; unbounded spaces are left as they are."""
    low = np.asarray(space.low, np.float64).reshape(-1)
    high = np.asarray(space.high, np.float64).reshape(-1)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return fn
    half, mid = (high - low) / 2, (high + low) / 2

    def out(obs: np.ndarray) -> np.ndarray:
        raw = np.asarray(fn(obs), np.float64)
        mean = mid + raw[:, :len(low)] * half
        return np.concatenate([mean, raw[:, len(low):] + np.log(half)], axis=1)

    return out


def module_logits_fn(module: Any) -> LogitsFn:
    """``obs[B, D] -> logits[B, A]`` from a (torch) RLModule's ``forward_inference``."""
    import torch

    def logits(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(obs, dtype=torch.float32)})
        return out["action_dist_inputs"].float().numpy()

    return logits
