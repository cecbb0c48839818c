"""Network policies from checkpoints: native MLP (``file://``). RLlib checkpoints (``rllib://``)
load in ``policylm.rllib.checkpoints`` (Ray is needed there); external ``torch.nn.Module`` policies
(``pytorch://``) are in ``policylm.platform.policies.external``. Each loader returns
``logits_fn(obs[B, D]) -> logits[B, n]`` after checking that the checkpoint fits the env
(observation size, number of actions); :func:`policylm.platform.policies.base.network_policy` turns
that into actions (logits for ``Discrete`` spaces, values or a Gaussian for ``Box`` spaces).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policylm.platform.envs import EnvAdapter

MLP_FORMAT = "policylm-mlp/1"
LogitsFn = Callable[[np.ndarray], np.ndarray]


def action_width(space: gym.Space) -> int:
    """What a network's action head is sized by: ``n`` of a ``Discrete`` space (logits), the
    number of values of a ``Box`` (one action, or a Gaussian's mean); other spaces: ValueError."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise ValueError(f"network policies act in Discrete or Box action spaces, not {space}")


def check_fit(source: str, obs_dim: int, n_actions: int, adapter: EnvAdapter,
              space: gym.Space | None = None) -> None:
    """ValueError unless a checkpoint with observations of ``obs_dim`` values and an action head
    of ``n_actions`` (:func:`action_width` of its action space) fits ``adapter``'s env; given
    the checkpoint's action ``space``, its kind (discrete or continuous) must be the env's."""
    width = action_width(adapter.action_space)
    if space is not None and isinstance(space, gym.spaces.Box) != isinstance(
            adapter.action_space, gym.spaces.Box):
        raise ValueError(f"checkpoint {source} acts in {space}, but {adapter.env_id} acts in "
                         f"{adapter.action_space}; use a checkpoint trained on this env")
    if obs_dim != adapter.obs_dim or n_actions != width:
        raise ValueError(
            f"checkpoint {source} expects observations of size {obs_dim} and {n_actions} "
            f"actions, but {adapter.env_id} gives size {adapter.obs_dim} and "
            f"{width} actions; use a checkpoint trained on this env"
        )


def torch_logits_fn(net: Any) -> LogitsFn:
    """``obs[B, D] -> logits[B, A]`` from a module whose ``forward`` takes the batch."""
    import torch

    net.eval()

    def logits(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(obs, dtype=torch.float32)).float().numpy()

    return logits


def build_mlp(obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> Any:
    """A plain ``nn.Sequential`` MLP (tanh hidden layers): action logits for a ``Discrete``
    space, the action's values for a ``Box`` (``n_actions``: :func:`action_width`)."""
    from torch import nn

    layers: list[nn.Module] = []
    width = obs_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, n_actions))
    return nn.Sequential(*layers)


def save_mlp_policy(path: str | Path, net: Any, obs_dim: int, n_actions: int,
                    hidden: Sequence[int], env_id: str = "") -> Path:
    """Save a :func:`build_mlp` network as a native checkpoint (plain tensors and numbers, so
    it loads with ``weights_only=True``); usable as ``file://<path>``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format": MLP_FORMAT, "obs_dim": int(obs_dim), "n_actions": int(n_actions),
         "hidden": [int(h) for h in hidden], "env_id": env_id,
         "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}},
        path,
    )
    return path


def _load_weights(path: str) -> Any:
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {p} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{p} is not a loadable torch checkpoint ({err})") from err


def mlp_logits_fn(path: str, adapter: EnvAdapter) -> LogitsFn:
    """Load a native MLP checkpoint written by :func:`save_mlp_policy`."""
    ckpt = _load_weights(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != MLP_FORMAT:
        raise ValueError(f"{path} is not a policylm MLP checkpoint (format {MLP_FORMAT})")
    check_fit(path, ckpt["obs_dim"], ckpt["n_actions"], adapter)
    net = build_mlp(ckpt["obs_dim"], ckpt["n_actions"], ckpt["hidden"])
    net.load_state_dict(ckpt["state_dict"])
    return torch_logits_fn(net)


def load_state_dict(net: Any, path: str, class_path: str) -> None:
    """Load the weights in ``path`` (``weights_only``; a dict holding ``state_dict`` is
    unwrapped) into ``net``; a mismatch names the class and the file."""
    state = _load_weights(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights in {path} do not fit {class_path}: {err}") from err
