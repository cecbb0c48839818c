"""PPO modules that start from a policy trained elsewhere (bc-ppo init=): the copy's logits
equal the source's, and sources that do not fit are refused by name."""

import json
import textwrap
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch

from policylm.jobs.bc_ppo import BcPpoConfig
from policylm.platform.config import ConfigError, load_config
from policylm.platform.policies import PolicyError
from policylm.rllib.checkpoints import module_logits_fn
from policylm.rllib.initial_weights import ppo_policy_path, prepare_init

MLP = textwrap.dedent('''
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self, sizes, act="tanh", skip=False):
            super().__init__()
            layers = []
            for a, b in zip(sizes[:-2], sizes[1:-1]):
                layers += [nn.Linear(a, b), nn.Tanh() if act == "tanh" else nn.ReLU()]
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(sizes[-2], sizes[-1])
            self.skip = skip

        def forward(self, obs):
            h = self.body(obs)
            return self.head(h + 1.0 if self.skip else h)
''')


def torch_uri(tmp_path: Path, sizes: list[int], act: str = "tanh", skip: bool = False,
              seed: int = 0) -> tuple[str, object]:
    """A pytorch:// URI of a random MLP saved in tmp_path, and the module itself."""
    import importlib.util

    code = tmp_path / "mlp.py"
    code.write_text(MLP)
    spec = importlib.util.spec_from_file_location("mlp_for_test", code)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(seed)
    net = mod.MLP(sizes, act, skip)
    weights = tmp_path / f"mlp-{act}-{skip}-{seed}.pt"
    torch.save(net.state_dict(), weights)
    init = quote(json.dumps({"sizes": sizes, "act": act, "skip": skip}))
    return f"pytorch://{weights}?class={code}:MLP&init={init}", net


def probe(n: int = 32) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 4)).astype(np.float32)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_a_torch_mlp_becomes_a_ppo_module_with_its_logits(tmp_path, act):
    uri, net = torch_uri(tmp_path, [4, 8, 6, 2], act)
    path, model, check = prepare_init(uri, "CartPole-v1", {}, tmp_path / "module")
    assert model == {"fcnet_hiddens": [8, 6], "fcnet_activation": act, "vf_share_layers": False}
    assert check["layers"] == 3 and check["logits_max_abs_diff"] <= 1e-5
    from ray.rllib.core.rl_module.rl_module import RLModule

    saved = RLModule.from_checkpoint(path)  # the module the PPO trial loads
    with torch.no_grad():
        want = net(torch.as_tensor(probe())).numpy()
    np.testing.assert_allclose(module_logits_fn(saved)(probe()), want, atol=1e-6)
    copied = [m.weight.detach().numpy() for m in ppo_policy_path(saved)]
    source = [m.weight.detach().numpy() for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert all(np.array_equal(a, b) for a, b in zip(copied, source, strict=True))


def test_an_rllib_module_with_a_shared_encoder_keeps_its_policy(tmp_path):
    import gymnasium as gym
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    torch.manual_seed(3)
    source = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                          observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
                          action_space=gym.spaces.Discrete(2),
                          model_config={"fcnet_hiddens": [5], "fcnet_activation": "relu",
                                        "vf_share_layers": True}).build()
    source.save_to_path(str(tmp_path / "src"))
    path, model, _ = prepare_init(f"rllib://{tmp_path / 'src'}", "CartPole-v1", {},
                                  tmp_path / "module")
    assert model["fcnet_hiddens"] == [5] and model["vf_share_layers"] is False
    from ray.rllib.core.rl_module.rl_module import RLModule

    np.testing.assert_allclose(module_logits_fn(RLModule.from_checkpoint(path))(probe()),
                               module_logits_fn(source)(probe()), atol=1e-6)


def test_sources_that_do_not_fit_are_refused_by_name(tmp_path):
    wrong, _ = torch_uri(tmp_path, [3, 8, 2])
    with pytest.raises(PolicyError, match=r"observations of size 3 .* CartPole-v1 has "
                                          r"observations of size 4 and 2 actions"):
        prepare_init(wrong, "CartPole-v1", {}, tmp_path / "a")
    skip, _ = torch_uri(tmp_path, [4, 8, 2], skip=True)
    with pytest.raises(PolicyError, match="logits differ from the source's"):
        prepare_init(skip, "CartPole-v1", {}, tmp_path / "b")
    with pytest.raises(PolicyError, match="continuous actions"):
        prepare_init(wrong, "Pendulum-v1", {}, tmp_path / "d")
    with pytest.raises(PolicyError, match="pytorch:// or rllib://"):
        prepare_init("file://x.pt", "CartPole-v1", {}, tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abcd")  # nothing written for a refusal


def test_init_and_the_external_method_go_together():
    with pytest.raises(ConfigError, match="add it to methods"):
        load_config(BcPpoConfig, None, ["init=rllib://x"])
    with pytest.raises(ConfigError, match="give init=rllib://"):
        load_config(BcPpoConfig, None, ["methods=[external]"])
    cfg = load_config(BcPpoConfig, None, ["methods=[external, scratch]", "init=rllib://x"])
    assert cfg.methods == ["external", "scratch"]
