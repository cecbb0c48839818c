"""External PyTorch policies (``pytorch://<weights>?class=<module or file.py>:<Class>``).

Two shapes of ``torch.nn.Module`` load:

- **plain**: ``forward(obs)`` maps a batch of flattened observations ``[B, D]`` to logits
  ``[B, A]``; built as ``Class(**init)``.
- **external-policy** (the shape of MettaGrid/PufferLib policies): ``forward(observations,
  state)`` returns ``(logits [B, A], value [B] or [B, 1])``, or ``(logits, value, state)``.
  ``observations`` is the batch of what the env gives policies (MettaGrid: the token arrays
  ``[B, num_tokens, 3]`` as uint8; other envs: the flattened float32 vectors). ``state`` is
  ``None`` unless the module has ``initial_state(batch_size) -> dict[str, Tensor]`` (batch on
  dim 0): then each env slot keeps its own recurrent state, reset at every episode start, and the
  module updates the dict in place or returns the new one. If the constructor's first parameter
  is named ``env``, ``env_info`` or ``policy_env_info``, it gets the env's description
  (MettaGrid: its ``PolicyEnvInterface``; other envs: observation and action spaces and action
  names), plus ``init``'s keyword arguments.

``class`` is ``module:Class`` (importable) or ``path/to/file.py:Class``. Weights load with
``weights_only=True``; a dict holding ``state_dict`` is unwrapped. Acting is greedy unless
``?sample=1``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from policylm.platform.envs import EnvAdapter
from policylm.platform.policy import Policy

ENV_PARAMS = ("env", "env_info", "policy_env_info")


def load_class(class_path: str) -> type:
    """``module:Class`` or ``path/to/file.py:Class`` -> the class."""
    where, _, name = class_path.rpartition(":")
    if not where or not name:
        raise ValueError(f"class {class_path!r} must be written module:Class or file.py:Class")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"policy class file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"policylm_external_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(where)
    cls = getattr(module, name, None)
    if cls is None:
        raise ValueError(f"{where} has no {name}")
    return cls


def env_description(adapter: EnvAdapter) -> Any:
    """What an env-taking constructor gets: the adapter's ``env_info`` when it has one, else
    ``observation_space`` (the flattened Box), ``action_space``, ``action_names``,
    ``num_agents`` (also as ``single_observation_space``/``single_action_space``)."""
    if adapter.env_info is not None:
        return adapter.env_info
    import gymnasium as gym

    obs = gym.spaces.Box(-np.inf, np.inf, (adapter.obs_dim,), np.float32)
    return SimpleNamespace(observation_space=obs, action_space=adapter.action_space,
                           single_observation_space=obs, single_action_space=adapter.action_space,
                           action_names=list(adapter.codec.valid_actions or []),
                           num_agents=adapter.num_agents, env_id=adapter.env_id)


def build_module(cls: type, init: dict, adapter: EnvAdapter) -> Any:
    """``cls(env_description, **init)`` when its first parameter takes the env, else
    ``cls(**init)``."""
    params = [p for p in inspect.signature(cls).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if params and params[0].name in ENV_PARAMS:
        return cls(env_description(adapter), **init)
    return cls(**init)


def takes_state(module: Any) -> bool:
    """True for the external-policy shape: ``forward(observations, state)``."""
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params) >= 2


class ExternalPolicy(Policy):
    """Acts with an external-policy-shaped module (see module docstring); per-slot recurrent
    state and random streams; ``values`` holds the value estimates of the last call."""

    def __init__(self, adapter: EnvAdapter, module: Any, sample: bool = False):
        import torch

        self.adapter, self.module, self.sample = adapter, module.eval(), sample
        self.obs_fn = adapter.policy_obs or adapter.flatten
        self.recurrent = callable(getattr(module, "initial_state", None))
        self.states: dict[int, dict[str, Any]] = {}
        self.rngs: dict[int, np.random.Generator] = {}
        self.values = np.zeros(0)
        self.start = int(getattr(adapter.action_space, "start", 0))
        self._torch = torch

    def reset(self, slot: int, seed: int) -> None:
        self.rngs[slot] = np.random.default_rng(seed)
        if self.recurrent:
            self.states[slot] = self._initial(1)

    def _initial(self, batch: int) -> dict[str, Any]:
        state = self.module.initial_state(batch)
        if not isinstance(state, dict):
            raise ValueError("initial_state(batch_size) must return a dict of tensors with the "
                             f"batch on dim 0, got {type(state).__name__}")
        return state

    def forward(self, observations: Sequence[Any], slots: Sequence[int]
                ) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [B, A], value [B])`` for the slots, advancing their recurrent state."""
        torch = self._torch
        for s in slots:
            if self.recurrent and s not in self.states:
                self.states[s] = self._initial(1)
        x = torch.as_tensor(np.stack([np.asarray(self.obs_fn(o)) for o in observations]))
        state = None
        if self.recurrent:
            keys = self.states[slots[0]].keys()
            state = {k: torch.cat([self.states[s][k] for s in slots]) for k in keys}
        with torch.no_grad():
            out = self.module(x, state)
        if not isinstance(out, tuple | list) or len(out) < 2:
            raise ValueError("forward(observations, state) must return (logits, value) or "
                             f"(logits, value, state), got {type(out).__name__}")
        logits, value = out[0], out[1]
        if self.recurrent:
            new = out[2] if len(out) > 2 and out[2] is not None else state
            for i, s in enumerate(slots):
                self.states[s] = {k: v[i:i + 1].detach() for k, v in new.items()}
        return (logits.float().numpy().astype(np.float64),
                value.float().reshape(len(slots), -1)[:, 0].numpy())

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[int]:
        for s in slots:
            if s not in self.rngs:
                self.reset(s, s)
        from policylm.platform.policies.base import choose

        logits, self.values = self.forward(observations, slots)
        return choose(logits, [self.rngs[s] for s in slots], self.sample, self.start)


def check_actions(n_out: int, adapter: EnvAdapter, class_path: str) -> None:
    n = int(getattr(adapter.action_space, "n", -1))
    if n_out != n:
        raise ValueError(f"{class_path} outputs {n_out} logits, {adapter.env_id} has {n} actions")


def external_policy(path: str, class_path: str, init: dict, adapter: EnvAdapter,
                    sample: bool = False) -> Any:
    """The policy for ``pytorch://<path>?class=<class_path>``: an :class:`ExternalPolicy` for
    the external-policy shape, else a :class:`policylm.platform.policies.LogitsPolicy` over the
    plain module. The module's output size is checked on one observation."""
    from policylm.platform.policies.base import LogitsPolicy
    from policylm.platform.policies.network import load_state_dict, torch_logits_fn

    module = build_module(load_class(class_path), init, adapter)
    load_state_dict(module, path, class_path)
    probe = adapter.observation_space.sample()
    if takes_state(module):
        policy = ExternalPolicy(adapter, module, sample)
        logits, _ = policy.forward([probe], [-1])
        policy.states.pop(-1, None)
        check_actions(logits.shape[-1], adapter, class_path)
        return policy
    fn = torch_logits_fn(module)
    check_actions(fn(adapter.flatten(probe)[None]).shape[-1], adapter, class_path)
    return LogitsPolicy(adapter, fn, sample=sample)
