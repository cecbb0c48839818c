"""Action codecs: valid action lists, parsing, text, indices."""

import gymnasium as gym
import numpy as np
import pytest

from policylm.platform.envs.codecs import (
    ActionParseError,
    BoxBinsCodec,
    BoxNumericCodec,
    MultiDiscreteCodec,
    NamedDiscreteCodec,
    default_codec,
)


def test_named_discrete():
    c = NamedDiscreteCodec(["left", "right"])
    assert c.valid_actions == ["left", "right"]
    assert c.parse(" Right\n") == 1 and c.parse("<action>left</action>") == 0
    assert c.parse("right, because the pole leans right") == 1
    assert c.to_text(np.int64(0)) == "left" and c.index(1) == 1 and c.from_index(1) == 1
    with pytest.raises(ActionParseError, match="not one of the valid actions"):
        c.parse("up")


def test_discrete_with_start_offset():
    c = default_codec(gym.spaces.Discrete(3, start=-1))
    assert c.valid_actions == ["-1", "0", "1"]
    assert c.parse("-1") == -1 and c.index(-1) == 0 and c.from_index(2) == 1


def test_multidiscrete():
    c = MultiDiscreteCodec([2, 3])
    assert c.valid_actions == ["0 0", "0 1", "0 2", "1 0", "1 1", "1 2"]
    assert c.parse("1 2").tolist() == [1, 2] and c.index([1, 2]) == 5
    assert c.from_index(4).tolist() == [1, 1] and c.to_text(np.array([0, 2])) == "0 2"
    with pytest.raises(ActionParseError, match=r"outside 0\.\.2"):
        c.parse("1 3")
    with pytest.raises(ActionParseError, match="expected 2 integers"):
        c.parse("1")
    assert MultiDiscreteCodec([20, 20]).valid_actions is None  # 400 > the listing cap


def test_box_bins_by_hand():
    c = BoxBinsCodec(np.array([-2.0, 0.0]), np.array([2.0, 1.0]), bins=5)
    # bins of dim 0: -2, -1, 0, 1, 2; of dim 1: 0, .25, .5, .75, 1
    assert c.parse("1 4").tolist() == [-1.0, 1.0]
    assert c.to_text(np.array([0.9, 0.3])) == "3 1"  # nearest bins: 1.0 -> 3, 0.25 -> 1
    assert c.index(np.array([2.0, 0.0])) == 4 * 5 + 0
    assert len(c.valid_actions) == 25


def test_box_numeric_clips_and_counts():
    c = BoxNumericCodec(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    assert c.valid_actions is None
    assert c.parse("<action>0.5 -3</action>").tolist() == [0.5, -1.0]
    assert c.to_text(np.array([0.123, 2.0])) == "<action>0.12 1.00</action>"
    with pytest.raises(ActionParseError, match="expected 2 numbers, got 1"):
        c.parse("0.3")


def test_default_codec_rejects_unknown_spaces():
    with pytest.raises(TypeError, match="not supported"):
        default_codec(gym.spaces.Text(5))
    with pytest.raises(ValueError, match="bounded Box"):
        default_codec(gym.spaces.Box(-np.inf, np.inf, (1,)), box="bins")
