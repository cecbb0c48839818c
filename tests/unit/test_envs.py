"""Env adapters: text, JSON, codecs, and Gymnasium's env checker on the wrapped envs."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from policylm.platform.envs import FlatObsEnv, format_number, make_adapter
from policylm.platform.envs.cartpole import encode_cartpole
from policylm.platform.envs.minigrid import view_rows
from policylm.platform.prompts import format_user

ENVS = ["CartPole-v1", "MiniGrid-DoorKey-5x5-v0", "MiniGrid-Empty-8x8-v0", "Pendulum-v1",
        "MountainCar-v0", "Acrobot-v1"]


@pytest.mark.parametrize("env_id", ENVS)
def test_wrapped_envs_pass_check_env(env_id):
    adapter = make_adapter(env_id)
    env = adapter.make_env()
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert isinstance(adapter.encode(obs), str) and adapter.encode(obs)
    assert adapter.flatten(obs).shape == (adapter.obs_dim,)
    assert adapter.user_text(10, 0, "o").startswith("Target return: 10\nStep: 0\n")
    check_env(FlatObsEnv({"env_id": env_id}), skip_render_check=True)


def test_cartpole_text_by_hand_and_token_budget():
    assert encode_cartpole([0.0213, -0.1534, 0.0321, 0.2101]) == "x=0.02 v=-0.15 a=0.03 w=0.21"
    assert encode_cartpole([-2.4, 0.0, -0.00001, 3.0]) == "x=-2.4 v=0 a=0 w=3"
    from policylm.platform.engines.models import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    adapter = make_adapter("CartPole-v1")
    worst = adapter.encode(np.array([-4.79, -123.45, -0.41, -123.45], dtype=np.float32))
    assert len(tok(worst)["input_ids"]) <= 40
    env = adapter.make_env()
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        assert len(tok(adapter.encode(obs))["input_ids"]) <= 40
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    assert adapter.codec.valid_actions == ["left", "right"]
    assert "Valid actions: left, right." in adapter.system_text()


def test_minigrid_text_names_what_is_around():
    adapter = make_adapter("MiniGrid-DoorKey-5x5-v0")
    env = adapter.make_env()
    obs, _ = env.reset(seed=0)
    j = adapter.to_json(obs)
    image = obs["image"]  # (x, y, 3); the agent is at (3, 6) facing up (y decreasing)
    assert j["mission"] == "use the key to open the door and then get to the goal"
    assert image[3, 5, 0] == 2 and j["front"] == "wall"  # object 2 (wall) right ahead
    assert j["view"][-1][3] == "^" and len(j["view"]) == 7
    assert j["carrying"] == "nothing"
    text = adapter.encode(obs)
    assert text.startswith("Mission: use the key") and "Carrying: nothing." in text
    # the scripted bot walks to the key and picks it up: the text must say we carry it
    from policylm.platform.envs.minigrid_bot import MiniGridBot

    bot = MiniGridBot(adapter)
    bot.reset(0, 0)
    for _ in range(40):
        action = bot.act([obs], [0])[0]
        obs, *_ = env.step(action)
        if action == 3:  # pickup
            break
    assert action == 3 and adapter.to_json(obs)["carrying"] == "yellow key"
    assert "Carrying: yellow key." in adapter.encode(obs)


def test_view_rows_by_hand():
    image = np.zeros((3, 2, 3), dtype=np.uint8)
    image[:, 0, 0] = 2          # far row: walls
    image[:, 1, 0] = 1          # near row: empty
    image[2, 1] = (5, 4, 0)     # a key to the right of the agent
    assert view_rows(image) == ["###", ".^K"]


def test_generic_dict_and_multidiscrete_space():
    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict(
            {"pos": gym.spaces.Box(-1, 1, (2,), np.float32), "mode": gym.spaces.Discrete(3)})
        action_space = gym.spaces.MultiDiscrete([2, 2])

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return {"pos": np.array([0.5, -0.25], np.float32), "mode": 2}, {}

        def step(self, action):
            return self.reset()[0], 1.0, True, False, {}

    adapter = make_adapter("dict-env", make_env=DictEnv)
    obs, _ = adapter.make_env().reset()
    assert adapter.encode(obs) == "mode: 2; pos: 0.5 -0.25"
    assert adapter.to_json(obs) == {"obs": {"mode": 2, "pos": [0.5, -0.25]}}
    assert adapter.codec.valid_actions == ["0 0", "0 1", "1 0", "1 1"]
    assert adapter.obs_dim == 3 + 2


def test_numeric_box_codec_option_and_unknown_env():
    adapter = make_adapter("Pendulum-v1", box_codec="numeric")
    assert adapter.codec.valid_actions is None
    assert adapter.codec.parse("<action>9</action>").tolist() == [2.0]  # clipped to the space
    assert adapter.codec.to_text([0.5]) == "<action>0.50</action>"
    # the adapter's decimals reach the action's numbers as well as the observation's
    three = make_adapter("Pendulum-v1", box_codec="numeric", decimals=3)
    assert three.codec.to_text([0.5]) == "<action>0.500</action>"
    with pytest.raises(ValueError, match="could not be made"):
        make_adapter("NoSuchEnv-v0")


def test_format_helpers():
    assert [format_number(v) for v in (3.0, 2.5, -0.001, 0.126)] == ["3", "2.5", "0", "0.13"]
    assert format_user(150, 7, "x=1") == "Target return: 150\nStep: 7\nx=1"
