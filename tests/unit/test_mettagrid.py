"""MettaGrid arena: token decoding by hand, per-agent collection, the 24-agent step in one engine
call, and external PyTorch policies (plain and recurrent) playing an episode."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policylm.platform.data import trajectories as tr
from policylm.platform.data.trajectories import arena_episode_id
from policylm.platform.envs import make_adapter
from policylm.platform.envs.mettagrid import TokenDecoder, offset_text
from policylm.platform.policies import PolicyError, policy_from_uri
from policylm.platform.rollout.multi_agent import MultiAgentRunner, make_runner
from policylm.platform.rollout.runner import plan_chunks

EXAMPLE = Path(__file__).resolve().parents[2] / "configs/examples/mettagrid_token_policy.py"
FEATURES = {0: "agent:group", 1: "episode_completion_pct", 2: "last_action", 3: "last_reward",
            6: "tag", 11: "agent_id", 24: "inv:heart"}
TAGS = ["type:agent", "type:heart", "type:wall"]
ACTIONS = ["noop", "move_north", "move_south", "move_west", "move_east"]


def pack(row, col):
    return (row << 4) | col


def hand_built():
    """Agent 5 (group 0) holding 2 hearts at the centre (6, 6) of a 13x13 view, a wall just
    north, a heart 2 north 1 east, agent 3 two east; last action move_north earned 1; 20% of the
    episode done; the rest of the 500 token slots unused."""
    rows = [(0xFE, 1, 51), (0xFE, 2, 1), (0xFE, 3, 1),
            (pack(6, 6), 6, 0), (pack(6, 6), 0, 0), (pack(6, 6), 11, 5), (pack(6, 6), 24, 2),
            (pack(5, 6), 6, 2),
            (pack(4, 7), 6, 1), (pack(4, 7), 24, 1),
            (pack(6, 8), 6, 0), (pack(6, 8), 11, 3), (pack(6, 8), 0, 0)]
    tokens = np.full((500, 3), 255, dtype=np.uint8)
    tokens[: len(rows)] = rows
    return {"tokens": tokens, "position": (10, 12)}


def test_tokens_decode_to_the_facts_of_a_hand_built_observation():
    dec = TokenDecoder(FEATURES, TAGS, (13, 13), ACTIONS, max_entities=8)
    j = dec.decode(hand_built())
    assert j["agent"] == {"id": 5, "group": 0, "position": [10, 12], "inventory": {"heart": 2},
                          "last_action": "move_north", "last_reward": 1, "episode_pct": 20.0}
    assert j["blocked"] == ["N"]
    assert j["entities"] == [  # nearest first; walls only as 'blocked'
        {"type": "agent", "dr": 0, "dc": 2, "distance": 2, "agent_id": 3},
        {"type": "heart", "dr": -2, "dc": 1, "distance": 3}]
    assert dec.text(hand_built()) == \
        "hearts 2 | last move_north r1 | blocked N | agent#3 2E, heart 2N 1E"
    flat = dec.flatten(hand_built())
    assert flat.shape == (13 * 13 + 5,)
    grid = flat[:169].reshape(13, 13)
    assert grid[5, 6] == 3 and grid[4, 7] == 2 and grid[6, 8] == 1 and grid.sum() == 3 + 2 + 1 + 1
    assert flat[169:].tolist() == [2, 1, pytest.approx(0.2), 10, 12]
    assert offset_text(0, 0) == "here" and offset_text(3, -1) == "3S 1W"
    capped = TokenDecoder(FEATURES, TAGS, (13, 13), ACTIONS, max_entities=1)
    assert [e["type"] for e in capped.decode(hand_built())["entities"]] == ["agent"]


@pytest.fixture(scope="module")
def arena():
    return make_adapter("MettaGrid-Arena", num_agents=6, hearts=20, width=13, height=13,
                        max_steps=12)


def test_real_arena_observations_decode_with_the_env_feature_names(arena):
    env = arena.make_env()
    obs, _ = env.reset(seed=4)
    again, _ = env.reset(seed=4)  # the same seed, the same arena
    assert all(np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(obs, again, strict=True))
    ids = [arena.to_json(o)["agent"]["id"] for o in obs]
    assert ids == list(range(6))
    kinds = {e["type"] for o in obs for e in arena.to_json(o)["entities"]}
    assert kinds <= {"agent", "heart"} and "heart" in kinds
    assert arena.codec.valid_actions == ACTIONS
    assert arena.flatten(obs[0]).shape == (arena.obs_dim,)
    json.dumps(arena.to_json(obs[0]))  # JSON-able
    with pytest.raises(ValueError, match="needs 6 actions"):
        env.step([0, 1])
    env.close()


def test_collection_has_one_row_per_agent_per_step_and_rtg_per_agent(arena):
    runner = make_runner(arena, num_envs=2)
    assert isinstance(runner, MultiAgentRunner)
    chunks = plan_chunks([("expert", "python:policylm.platform.envs.mettagrid:HeartSeeker"),
                          ("random", "random:")], 2, 0, 2)
    tables = {c.specs[0].skill: runner.run(c.specs, "t") for c in chunks}
    steps = tables["expert"]
    assert steps.num_rows == 2 * 6 * 12
    df = steps.to_pandas()
    assert sorted(df[tr.AGENT_ID].unique()) == list(range(6))
    assert {arena_episode_id(e) for e in df[tr.EPISODE_ID]} == {"expert-p0-e00000",
                                                                "expert-p0-e00001"}
    for _, g in df.groupby(tr.EPISODE_ID):  # rtg by hand: rewards summed from t to the end
        g = g.sort_values(tr.T)
        assert g[tr.T].tolist() == list(range(12)) and g[tr.AGENT_ID].nunique() == 1
        assert np.allclose(g[tr.RTG], g[tr.REWARD][::-1].cumsum()[::-1])
        assert g[tr.TRUNCATED].iloc[-1] and not g[tr.TERMINATED].any()
    returns = {k: tr.episode_table(t).column("return").to_numpy().mean()
               for k, t in tables.items()}
    assert returns["expert"] > returns["random"]


class CountingEngine:
    """Passes calls through to an engine and records the size of every score call."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def score(self, prompts, candidates, prefix=None):
        self.calls.append(len(prompts))
        return self.engine.score(prompts, candidates, prefix=prefix)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_a_24_agent_step_is_one_engine_call_with_a_target_per_agent(tiny_model_dir):
    from policylm.platform.engines import get_engine
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter("MettaGrid-Arena", num_agents=24, hearts=250, width=19, height=19,
                           max_steps=6)
    engine = CountingEngine(get_engine(tiny_model_dir, "", "hf", "fp32"))
    # a hot softmax: the random tiny model's scores favour the one-token "noop"
    policy = LLMPolicy(adapter, engine, LLMPolicyConfig(target_return=5, prompt_form="compact",
                                                        temperature=100.0))
    runner = MultiAgentRunner(adapter, num_envs=1)
    runner.policies["llm"] = policy
    spec = plan_chunks([("llm", "llm")], 1, 3, 1)[0].specs
    table = runner.run(spec, "t")
    assert engine.calls == [24] * 6  # one call per step, every agent in it
    episodes = tr.episode_table(table).to_pandas()
    earned = {int(a): r for a, r in zip(episodes[tr.AGENT_ID], episodes["return"], strict=True)}
    assert {s: policy.earned[s] for s in range(24)} == earned
    assert all(policy.target(a) == 5 - earned[a] for a in range(24))  # adaptive, per agent
    assert sum(earned.values()) > 0  # hearts on most free cells: some agent walked into one


def test_pytorch_external_policy_with_lstm_state_plays_an_episode(arena, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_policy", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(0)
    net = example.TokenLSTMPolicy(arena.env_info, hidden=16)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    uri = f"pytorch://{tmp_path / 'w.pt'}?class={EXAMPLE}:TokenLSTMPolicy&init=" + \
        json.dumps({"hidden": 16}) + "&sample=1"
    runner = make_runner(arena, num_envs=1)
    table = runner.run(plan_chunks([("lstm", uri)], 1, 0, 1)[0].specs, "t")
    assert table.num_rows == 6 * 12
    policy = runner.policies[uri]
    assert set(policy.states) == set(range(6)) and policy.values.shape == (6,)
    h = torch.cat([policy.states[s]["h"] for s in range(6)])
    assert h.shape == (6, 16) and h.abs().sum() > 0  # the memory moved on from zeros
    # the per-agent state is the module's own recurrence: replaying agent 0's observations
    # through the module in one stream gives the same final state
    env = arena.make_env()
    obs, _ = env.reset(seed=plan_chunks([("lstm", uri)], 1, 0, 1)[0].specs[0].seed)
    state = net.initial_state(6)
    with torch.no_grad():
        net(torch.as_tensor(np.stack([o["tokens"] for o in obs])), state)
    first = policy.module.initial_state(6)
    with torch.no_grad():
        policy.module(torch.as_tensor(np.stack([o["tokens"] for o in obs])), first)
    assert torch.allclose(state["h"], first["h"])  # loaded weights are the saved ones
    with pytest.raises(PolicyError, match="outputs 5 logits, CartPole-v1 has 2 actions"):
        policy_from_uri(uri.replace("&sample=1", ""), _cartpole_with_tokens(arena))


def _cartpole_with_tokens(arena):
    """CartPole whose policies see MettaGrid-shaped tokens: a wrong-env check."""
    import dataclasses

    cart = make_adapter("CartPole-v1")
    return dataclasses.replace(cart, env_info=arena.env_info, observation_space=arena.
                               observation_space, policy_obs=arena.policy_obs)


class StatelessActorCritic(torch.nn.Module):
    """External-policy shape without recurrence, built from the env description."""

    def __init__(self, env, scale: float = 1.0):
        super().__init__()
        self.net = torch.nn.Linear(env.observation_space.shape[0], len(env.action_names))
        self.scale = scale

    def forward(self, observations, state):
        assert state is None
        return self.net(observations) * self.scale, observations.sum(-1)


def test_stateless_external_policy_and_bad_class_paths(tmp_path):
    cart = make_adapter("CartPole-v1")
    net = StatelessActorCritic(type("E", (), {"observation_space": cart.observation_space,
                                             "action_names": ["left", "right"]}))
    torch.save(net.state_dict(), tmp_path / "s.pt")
    uri = f"pytorch://{tmp_path / 's.pt'}?class={__file__}:StatelessActorCritic"
    policy = policy_from_uri(uri, cart)
    obs = [np.array([0.1, 0.0, 0.02, -0.1], np.float32), np.zeros(4, np.float32)]
    with torch.no_grad():
        expected = net(torch.as_tensor(np.stack(obs)), None)[0].argmax(-1).tolist()
    assert policy.act(obs, [0, 1]) == expected
    assert np.allclose(policy.values, [0.1 + 0.02 - 0.1, 0.0], atol=1e-6)
    with pytest.raises(PolicyError, match="does not exist"):
        policy_from_uri(f"pytorch://{tmp_path / 's.pt'}?class=nowhere/p.py:P", cart)
    with pytest.raises(PolicyError, match="has no Missing"):
        policy_from_uri(f"pytorch://{tmp_path / 's.pt'}?class=policylm.platform.envs:Missing",
                        cart)
    torch.save({"state_dict": {"net.weight": torch.zeros(3, 3)}}, tmp_path / "w.pt")
    with pytest.raises(PolicyError, match="do not fit"):
        policy_from_uri(uri.replace("s.pt", "w.pt"), cart)


def test_every_arena_episode_starts_at_the_configured_target(tiny_model_dir):
    """One env slot, three arena episodes: every agent's first step of every episode has the
    configured target, not the target less its reward on the previous episode's last step."""
    from policylm.platform.engines import get_engine
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter("MettaGrid-Arena", num_agents=24, hearts=250, width=19, height=19,
                           max_steps=3)
    policy = LLMPolicy(adapter, get_engine(tiny_model_dir, "", "hf", "fp32"),
                       LLMPolicyConfig(target_return=5, prompt_form="compact",
                                       temperature=100.0))
    runner = MultiAgentRunner(adapter, num_envs=1)
    runner.policies["llm"] = policy
    specs = plan_chunks([("llm", "llm")], 3, 3, 3)[0].specs
    rows = runner.run(specs, "t").select(
        [tr.EPISODE_ID, tr.T, tr.REWARD, tr.TARGET_RETURN]).to_pylist()
    last = max(r[tr.T] for r in rows)
    # the case that matters: some agent earned a heart on an episode's last step
    assert any(r[tr.REWARD] > 0 for r in rows if r[tr.T] == last)
    firsts = [r[tr.TARGET_RETURN] for r in rows if r[tr.T] == 0]
    assert len(firsts) == 3 * 24 and set(firsts) == {5.0}
