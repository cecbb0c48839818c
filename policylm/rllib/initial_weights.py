"""PPO that starts from a policy trained elsewhere (``bc-ppo init=<policy URI>``).

The source is a ``pytorch://`` policy of the plain shape (``forward(obs) -> logits``, built of
``nn.Linear`` layers with one activation between them) or an ``rllib://`` checkpoint. Its policy
path (the Linear layers from observation to logits, in order) is copied into a PPO-shaped
RLModule with the same hidden sizes and activation; the value function is new, its output layer
zeroed by the trial (V = 0 everywhere, as after BC). The copy is checked: the new module's
logits must equal the source's on probe observations, or the source is refused with what
differed (a :class:`~policylm.platform.policies.PolicyError`, printed as one line).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from policylm.platform.policies import PolicyError

# activation modules -> RLlib's names for them (``fcnet_activation``)
ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu", "SiLU": "silu", "ELU": "elu"}
SCHEMES = ("pytorch", "rllib")
TOLERANCE = 1e-5


def _linears(module: Any) -> list:
    from torch import nn

    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def ppo_policy_path(module: Any) -> list:
    """The Linear layers from observation to logits of a PPO/BC RLModule: the actor encoder's
    (or the shared encoder's), then the policy head's."""
    encoder = module.encoder
    actor = getattr(encoder, "actor_encoder", None) or getattr(encoder, "encoder", None)
    if actor is None:
        raise PolicyError(f"{type(module).__name__} has no actor encoder; pass a PPO or BC "
                         "module (RLlib's default PPO module)")
    return _linears(actor) + _linears(module.pi)


def _torch_source(uri: str, adapter: Any) -> tuple[Any, dict]:
    """A plain ``pytorch://`` module and the PPO model config of its shape."""
    from policylm.platform.policies.external import build_module, load_class, takes_state
    from policylm.platform.policies.network import load_state_dict
    from policylm.platform.policies.uri import split_uri

    _, path, params = split_uri(uri)
    if "class" not in params:
        raise PolicyError(f"init={uri}: pytorch:// needs ?class=<module:Class> (or "
                         "path/to/file.py:Class)")
    import json

    net = build_module(load_class(params["class"]), json.loads(params.get("init", "{}")),
                       adapter)
    load_state_dict(net, path, params["class"])
    if takes_state(net):
        raise PolicyError(f"init={uri}: {params['class']} takes (observations, state); PPO starts "
                         "from plain policies only (forward(obs) -> logits built of nn.Linear "
                         "layers)")
    acts = sorted({ACTIVATIONS.get(type(m).__name__, type(m).__name__) for m in net.modules()
                   if not list(m.children()) and type(m).__name__ != "Linear"})
    if len(acts) > 1 or (acts and acts[0] not in ACTIVATIONS.values()):
        raise PolicyError(f"init={uri}: {params['class']} has {acts} besides its Linear layers; "
                         f"PPO can start from an MLP with one activation of "
                         f"{sorted(ACTIVATIONS.values())}")
    layers = _linears(net)
    return net, {"fcnet_hiddens": [int(m.out_features) for m in layers[:-1]],
                 "fcnet_activation": acts[0] if acts else "tanh", "vf_share_layers": False}


def _rllib_source(uri: str) -> tuple[Any, dict]:
    """An ``rllib://`` checkpoint's RLModule and its model config, unshared for PPO."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from policylm.platform.policies.uri import split_uri
    from policylm.rllib.checkpoints import rllib_module_dir

    module = RLModule.from_checkpoint(str(rllib_module_dir(Path(split_uri(uri)[1]).resolve())))
    config = module.model_config
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return module, {**dict(config or {}), "vf_share_layers": False}


def _source_logits(source: Any, obs: np.ndarray) -> np.ndarray:
    from policylm.platform.policies.network import torch_logits_fn
    from policylm.rllib.checkpoints import module_logits_fn

    if hasattr(source, "forward_inference"):
        return module_logits_fn(source)(obs)
    return torch_logits_fn(source)(obs)


def prepare_init(uri: str, env_id: str, env_options: dict, out: Path) -> tuple[str, dict, dict]:
    """Write the PPO-shaped module that starts from ``uri``'s policy to ``out``; returns its
    directory, the PPO model config (hidden sizes and activation of the source) and the check
    (the largest difference of logits on 256 probe observations, the layers copied)."""
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from policylm.platform.envs import FlatObsEnv, make_adapter
    from policylm.platform.policies.uri import split_uri

    scheme = split_uri(uri)[0]
    if scheme not in SCHEMES:
        raise PolicyError(f"init={uri}: PPO starts from pytorch:// or rllib:// policies, not "
                         f"{scheme}://")
    env = FlatObsEnv({"env_id": env_id, "env_options": env_options})
    if not hasattr(env.action_space, "n"):
        env.close()
        raise PolicyError(f"init={uri}: {env_id} has continuous actions ({env.action_space}); "
                          "bc-ppo starts PPO from policies over discrete actions only")
    obs_dim, n_actions = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    if scheme == "pytorch":
        source, model_config = _torch_source(uri, make_adapter(env_id, **env_options))
        layers = _linears(source)
    else:
        source, model_config = _rllib_source(uri)
        layers = ppo_policy_path(source)
    if not layers or layers[0].in_features != obs_dim or layers[-1].out_features != n_actions:
        got = (layers[0].in_features, layers[-1].out_features) if layers else (None, None)
        raise PolicyError(f"init={uri} takes observations of size {got[0]} and gives {got[1]} "
                         f"logits, but {env_id} has observations of size {obs_dim} and "
                         f"{n_actions} actions; start from a policy trained on this env")
    module = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                          observation_space=env.observation_space, action_space=env.action_space,
                          model_config=model_config).build()
    targets = ppo_policy_path(module)
    shapes = [tuple(m.weight.shape) for m in layers]
    if [tuple(m.weight.shape) for m in targets] != shapes:
        raise PolicyError(f"init={uri}: its layers {shapes} do not map onto a PPO module's "
                         f"policy path {[tuple(m.weight.shape) for m in targets]}")
    with torch.no_grad():
        for src, dst in zip(layers, targets, strict=True):
            dst.weight.copy_(src.weight)
            if dst.bias is not None:
                dst.bias.copy_(src.bias if src.bias is not None else torch.zeros_like(dst.bias))
    env.observation_space.seed(0)
    probe = np.stack([env.observation_space.sample() for _ in range(256)]).astype(np.float32)
    env.close()
    from policylm.rllib.checkpoints import module_logits_fn

    diff = float(np.abs(module_logits_fn(module)(probe) - _source_logits(source, probe)).max())
    if not diff <= TOLERANCE:
        raise PolicyError(f"init={uri}: the PPO module's logits differ from the source's by up to "
                         f"{diff:.3g} on probe observations: the source is not a plain stack of "
                         "Linear layers and one activation (skip connections, normalisation or "
                         "another order); wrap it as such, or train it with RLlib")
    out.mkdir(parents=True, exist_ok=True)
    module.save_to_path(str(out.resolve()))
    return str(out.resolve()), model_config, {"source": uri, "layers": len(layers),
                                              "logits_max_abs_diff": diff}
