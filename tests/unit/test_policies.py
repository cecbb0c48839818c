"""Policies from URIs: determinism per episode seed, mixing, checkpoints, and errors."""

import numpy as np
import pytest
import torch

from policylm.platform.envs import make_adapter
from policylm.platform.policies import PolicyError, policy_from_uri, split_uri
from policylm.platform.policies.network import build_mlp, save_mlp_policy


@pytest.fixture(scope="module")
def cartpole():
    return make_adapter("CartPole-v1")


def _acts(policy, obs, slots, seeds, steps=20):
    for s, seed in zip(slots, seeds, strict=True):
        policy.reset(s, seed)
    return [policy.act(obs, slots) for _ in range(steps)]


def test_split_uri():
    assert split_uri("mix:random:?eps=0.3") == ("mix", "random:", {"eps": "0.3"})
    assert split_uri("rllib:///abs/dir?sample=1") == ("rllib", "/abs/dir", {"sample": "1"})
    assert split_uri("file://runs/p.pt") == ("file", "runs/p.pt", {})
    with pytest.raises(PolicyError, match="has no scheme"):
        split_uri("/just/a/path")


def test_random_is_determined_by_episode_seed_not_slot(cartpole):
    obs = [np.zeros(4, np.float32)] * 2
    a = _acts(policy_from_uri("random:", cartpole), obs, [0, 1], [7, 8])
    b = _acts(policy_from_uri("random:", cartpole), obs, [1, 0], [7, 8])  # slots swapped
    assert [x[0] for x in a] == [x[0] for x in b]  # same seed, same actions, any slot
    assert len({int(x[0]) for x in a}) == 2  # both actions occur


def test_constant_and_mix_extremes(cartpole):
    obs = [np.zeros(4, np.float32)] * 3
    assert _acts(policy_from_uri("constant:right", cartpole), obs, [0, 1, 2], [1, 2, 3], 2) == \
        [[1, 1, 1], [1, 1, 1]]
    never = _acts(policy_from_uri("mix:constant:left?eps=0", cartpole), obs, [0, 1, 2], [1, 2, 3])
    assert all(a == 0 for row in never for a in row)
    always = _acts(policy_from_uri("mix:constant:left?eps=1", cartpole), obs, [0, 1, 2], [1, 2, 3])
    rand = _acts(policy_from_uri("random:", cartpole), obs, [0, 1, 2], [2, 3, 4])
    assert always == rand  # eps=1: exactly the random stream seeded with seed+1
    half = _acts(policy_from_uri("mix:constant:left?eps=0.5", cartpole), obs, [0], [5], 400)
    share = np.mean([row[0] for row in half])  # right only from the random half: ~0.25
    assert 0.15 < share < 0.35


def test_file_mlp_checkpoint_round_trip(tmp_path, cartpole):
    torch.manual_seed(0)
    net = build_mlp(4, 2, [8])
    path = save_mlp_policy(tmp_path / "mlp.pt", net, 4, 2, [8], "CartPole-v1")
    policy = policy_from_uri(f"file://{path}", cartpole)
    obs = [np.array([0.1, -0.2, 0.05, 0.3], np.float32), np.array([-1, 1, -0.1, -1], np.float32)]
    with torch.no_grad():
        expect = net(torch.as_tensor(np.stack(obs))).argmax(-1).tolist()
    assert policy.act(obs, [0, 1]) == expect


def test_pytorch_external_module(tmp_path, cartpole):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 2)
    torch.save(lin.state_dict(), tmp_path / "lin.pt")
    init = '{"in_features":4,"out_features":2}'
    uri = f'pytorch://{tmp_path / "lin.pt"}?class=torch.nn:Linear&init={init}'
    policy = policy_from_uri(uri, cartpole)
    obs = [np.array([1.0, 0.0, 0.0, 0.0], np.float32)]
    with torch.no_grad():
        assert policy.act(obs, [0]) == [int(lin(torch.as_tensor(obs[0])).argmax())]
    bad = uri.replace('"out_features":2', '"out_features":3')
    with pytest.raises(PolicyError, match="do not fit"):
        policy_from_uri(bad, cartpole)


def test_errors_name_the_uri(tmp_path, cartpole):
    with pytest.raises(PolicyError, match=r"'nope://x': unknown scheme 'nope'"):
        policy_from_uri("nope://x", cartpole)
    with pytest.raises(PolicyError, match=r"file://.*missing.pt.*does not exist"):
        policy_from_uri(f"file://{tmp_path}/missing.pt", cartpole)
    with pytest.raises(PolicyError, match="is not an RLlib checkpoint"):
        policy_from_uri(f"rllib://{tmp_path}", cartpole)
    with pytest.raises(PolicyError, match="mix needs"):
        policy_from_uri("mix:random:", cartpole)
    with pytest.raises(PolicyError, match="not one of the valid actions"):
        policy_from_uri("constant:up", cartpole)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PolicyError, match="not a loadable torch checkpoint"):
        policy_from_uri(f"file://{tmp_path}/junk.pt", cartpole)
    net = build_mlp(4, 2, [8])
    path = save_mlp_policy(tmp_path / "cp.pt", net, 4, 2, [8])
    with pytest.raises(PolicyError, match="expects observations of size 4 and 2 actions"):
        policy_from_uri(f"file://{path}", make_adapter("MiniGrid-Empty-8x8-v0"))


def test_relative_hf_paths_become_absolute(tmp_path, monkeypatch):
    from policylm.platform.policies import absolute_paths

    (tmp_path / "model").mkdir()
    (tmp_path / "ad").mkdir()
    monkeypatch.chdir(tmp_path)
    assert absolute_paths("hf://model?adapter=ad&target_return=5") == \
        f"hf://{tmp_path}/model?adapter={tmp_path}/ad&target_return=5"
    assert absolute_paths("hf://smollm2-135m?target_return=5") == "hf://smollm2-135m?target_return=5"
    assert absolute_paths("random:") == "random:"


class Minimal:
    """A python: policy with act and reset only (not derived from Policy)."""

    def __init__(self, adapter, action="1"):
        self.action, self.seeds = int(action), {}

    def reset(self, slot, seed):
        self.seeds[slot] = seed

    def act(self, observations, slots):
        return [self.action for _ in slots]


class NoAct:
    def __init__(self, adapter):
        pass

    def reset(self, slot, seed):
        pass


def test_python_policy_gets_the_contracts_defaults(cartpole):
    """A python: class with act and reset only is completed with the optional methods' no-op
    defaults (so runners call them unprobed) and its own attributes still read through; one
    without act is refused, naming the URI."""
    from policylm.platform.policy import Policy
    from policylm.platform.rollout.runner import EpisodeRunner, EpisodeSpec

    policy = policy_from_uri("python:test_policies:Minimal?action=0", cartpole)
    assert isinstance(policy, Policy)
    policy.reset(3, 11)
    assert policy.seeds == {3: 11}
    policy.observe([3], [1.0])
    assert (policy.stats(), policy.thoughts, policy.targets, policy.set_lora({}, 1.0)) == \
        (None, None, None, 0)
    runner = EpisodeRunner(cartpole, num_envs=2)
    uri = "python:test_policies:Minimal?action=0"
    table = runner.run([EpisodeSpec(f"e{i}", uri, "s", i) for i in range(3)], "r")
    assert set(table.column("action_text").to_pylist()) == {"left"}
    assert table.column("target_return").null_count == table.num_rows
    assert runner.policy_stats() == {}
    with pytest.raises(PolicyError, match=r"python:test_policies:NoAct.*must have act"):
        policy_from_uri("python:test_policies:NoAct", cartpole)


def test_mix_passes_its_inner_policys_optional_methods(cartpole):
    """mix: forwards observe, stats, thoughts and targets to the policy it wraps."""

    class Inner(Minimal):
        def __init__(self, adapter):
            super().__init__(adapter)
            self.earned, self.targets = 0.0, [7.0]

        def observe(self, slots, rewards):
            self.earned += sum(rewards)

        def stats(self):
            return {"actions": 4}

    from policylm.platform.policies import MixPolicy, as_policy

    inner = Inner(cartpole)
    mix = MixPolicy(cartpole, as_policy(inner), eps=0.5)
    mix.observe([0, 1], [1.0, 2.0])
    assert inner.earned == 3.0
    assert (mix.stats(), mix.targets, mix.thoughts) == ({"actions": 4}, [7.0], None)
