"""MuJoCo adapter: RLFT4RL-style text, numeric actions, qpos/qvel state restore."""

import numpy as np
import pytest

from policylm.platform.envs import make_adapter
from policylm.platform.envs.codecs import ActionParseError
from policylm.platform.training.rewards import EnvReward, bc_reward


@pytest.fixture(scope="module")
def cheetah():
    return make_adapter("HalfCheetah-v5")


def test_text_names_every_number_and_the_answer_format(cheetah):
    system = cheetah.system_text()
    assert "0: torso height" in system and "16: front foot angular velocity" in system
    assert "5: front foot torque" in system and "each in [-1, 1]" in system
    assert "<action>a1 a2 ...</action>" in system
    assert cheetah.encode(np.array([0.011, -0.5] + [0.0] * 15)) == (
        "<observation>0.01 -0.5 " + " ".join(["0"] * 15) + "</observation>")
    assert cheetah.to_json(np.arange(17) / 10)["forward velocity"] == 0.8


def test_numeric_actions_round_trip_clipped(cheetah):
    codec = cheetah.codec
    a = np.array([0.5, -0.25, 1.0, -1.0, 0.0, 0.125], np.float32)
    assert codec.to_text(a) == "<action>0.50 -0.25 1.00 -1.00 0.00 0.12</action>"
    assert np.allclose(codec.parse(codec.to_text(a)), np.round(a, 2), atol=0.006)
    assert codec.parse("<action>3 -3 0 0 0 0</action>").tolist() == [1, -1, 0, 0, 0, 0]
    assert codec.valid_actions is None  # continuous: the LLM policy generates
    bins = make_adapter("HalfCheetah-v5", box_codec="bins", bins=3).codec
    assert bins.to_text(a) == "2 1 2 0 1 1"  # bins at -1, 0, 1 per dimension
    assert bins.parse("2 1 2 0 1 1").tolist() == [1, 0, 1, -1, 0, 0]


def test_state_restores_the_simulation(cheetah):
    env = cheetah.make_env()
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, 6).astype(np.float32))
    state = cheetah.save_state(env)
    assert len(state) == 9 + 9  # qpos (9) and qvel (9)
    action = rng.uniform(-1, 1, 6).astype(np.float32)
    obs, reward, *_ = env.step(action)
    other = cheetah.make_env()
    other.reset(seed=7)  # a different start: the restore must override it
    cheetah.restore_state(other, state)
    obs2, reward2, *_ = other.step(action)
    assert np.allclose(obs, obs2) and reward == pytest.approx(reward2)
    # the env reward of GRPO: the completion's action from the restored state, 1 step
    text = cheetah.codec.to_text(action)
    grounded = EnvReward(cheetah, policy="random:", horizon=1)
    exact = cheetah.codec.parse(text)
    env3 = cheetah.make_env()
    env3.reset(seed=0)
    cheetah.restore_state(env3, state)
    assert grounded([text], [state], [20]) == pytest.approx([env3.step(exact)[1]])
    with pytest.raises(ValueError, match="needs 9 qpos \\+ 9 qvel"):
        cheetah.restore_state(other, state[:-1])
    # the bc reward for continuous actions: negative scaled distance, 0 when equal
    assert bc_reward([text], [text], cheetah.codec, cheetah.action_space) == [0.0]


def test_digits_write_the_bins_together_and_say_so():
    digits = make_adapter("HalfCheetah-v5", box_codec="digits", bins=9)
    a = np.array([-1.0, -0.75, 0.0, 0.5, 1.0, 0.1], np.float32)
    assert digits.codec.to_text(a) == "014684"  # bins of 0.25 from -1: 0, 1, 4, 6, 8, 4
    assert digits.codec.parse("014684").tolist() == [-1.0, -0.75, 0.0, 0.5, 1.0, 0.0]
    assert digits.codec.parse(" 0 1 4 6 8 4\n").tolist() == [-1.0, -0.75, 0.0, 0.5, 1.0, 0.0]
    for bad, why in (("01468", "expected 6 digits"), ("0146849", "expected 6 digits"),
                     ("01468x", "expected 6 digits"), ("014689", "value 9 outside 0..8")):
        with pytest.raises(ActionParseError, match=why):
            digits.codec.parse(bad)
    assert digits.text_options == {"decimals": 2, "box_codec": "digits", "bins": 9}
    assert "0 for the lowest value to 8 for the highest, written together as 6 digits" in (
        digits.system_text())
    assert "separated by spaces" in make_adapter("HalfCheetah-v5", box_codec="bins").system_text()
    with pytest.raises(ValueError, match="at most 10 values per dimension"):
        make_adapter("HalfCheetah-v5", box_codec="digits", bins=11)
    with pytest.raises(ValueError, match="use one of bins, digits, numeric"):
        make_adapter("HalfCheetah-v5", box_codec="bits")
