"""GRPO reward functions against hand-made completions."""

import gymnasium as gym
import numpy as np
import pytest

from policylm.platform.envs.codecs import BoxNumericCodec, NamedDiscreteCodec
from policylm.platform.training.rewards import bc_reward, format_reward, reward_funcs

LR = NamedDiscreteCodec(["left", "right"])


def test_format_reward():
    texts = ["right", " left\n", "<action>left</action>", "Right", "rightwards", "go left", "",
             [{"role": "assistant", "content": "left"}]]
    assert format_reward(texts, LR) == [1, 1, 1, 1, 0, 0, 0, 1]  # lenient parses are not exact


def test_bc_reward_discrete_and_continuous():
    assert bc_reward(["right", "left", "up", " right"], ["right", "right", "left", " right"],
                     LR) == [1.0, 0.0, 0.0, 1.0]
    space = gym.spaces.Box(-1.0, 1.0, (2,))
    codec = BoxNumericCodec(space.low, space.high)
    got = bc_reward(["<action>0.5 -0.5</action>", "<action>0.5 0.5</action>", "nonsense"],
                    ["<action>0.5 0.5</action>"] * 3, codec, space, invalid=-1.0)
    # distance scaled by the width 2: sqrt(mean([0, (1/2)^2])) = sqrt(0.125)
    assert got[0] == pytest.approx(-np.sqrt(0.125)) and got[1] == 0.0 and got[2] == -1.0


def test_trl_shaped_reward_funcs(cartpole):
    funcs, weights = reward_funcs({"bc": 1.0, "format": 0.5}, cartpole)
    assert [f.__name__ for f in funcs] == ["format_reward", "bc_reward"] and weights == [0.5, 1.0]
    fmt, bc = funcs
    kwargs = {"prompts": ["p", "p"], "completion_ids": [[1], [2]], "trainer_state": None}
    assert fmt(completions=["left", "x"], expected=["left", "left"], **kwargs) == [1.0, 0.0]
    assert bc(completions=["left", "right"], expected=["left", "left"], **kwargs) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown rewards \\['envy'\\]"):
        reward_funcs({"envy": 1.0}, cartpole)


def test_grpo_rows_and_config_errors():
    import pyarrow as pa

    from policylm.jobs.grpo import GrpoJobConfig, to_grpo_rows
    from policylm.platform.config import ConfigError, config_from_dict

    batch = pa.table({"system": ["s"], "target_return": [500.0], "t": [3],
                      "observation": ["x=0.1"], "completion": ["right"],
                      "env_state": [[0.1, 0.0, 0.0, 0.0]]})
    compact = to_grpo_rows(batch, "compact").to_pylist()
    assert compact == [{"prompt": "R=500 t=3 x=0.1 ->", "expected": "right", "t": 3,
                        "env_state": [0.1, 0.0, 0.0, 0.0]}]
    chat = to_grpo_rows(batch, "chat").to_pylist()[0]
    assert chat["expected"] == "right" and chat["prompt"][1]["content"].startswith(
        "Target return: 500\nStep: 3")
    with pytest.raises(ConfigError, match="batch_size: must be a multiple of num_generations"):
        config_from_dict(GrpoJobConfig, {"dataset": "d", "batch_size": 12})
    with pytest.raises(ConfigError, match="rewards: give weights"):
        config_from_dict(GrpoJobConfig, {"dataset": "d", "rewards": {"envy": 1.0}})


def test_env_reward_restores_the_state(cartpole):
    from policylm.platform.training.rewards import EnvReward

    reward = EnvReward(cartpole, policy="constant:right", horizon=5, gamma=0.9, invalid=-1.0)
    # at rest in the middle: 5 steps survive: 1 + .9 + .81 + .729 + .6561
    safe = [0.0, 0.0, 0.0, 0.0]
    # the cart at x = 2.39 moving right at 1/s: Euler moves it to 2.41 > 2.4 on the first
    # step whatever the push, so the episode ends there with its reward of 1
    doomed = [2.39, 1.0, 0.0, 0.0]
    got = reward(["left", "right", "right", "jump"], [safe, safe, doomed, safe], [0, 0, 0, 0])
    assert got == pytest.approx([4.0951, 4.0951, 1.0, -1.0])
    # restored at step 498 of CartPole-v1's 500: truncated after 2 steps: 1 + .9
    assert reward(["left"], [safe], [498]) == pytest.approx([1.9])
    with pytest.raises(ValueError, match="needs the env_state column"):
        reward(["left"], [None], [0])


def test_cartpole_trajectories_record_the_env_state(cartpole):
    from policylm.platform.data.trajectories import ENV_STATE, OBS
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks

    (chunk,) = plan_chunks([("r", "random:")], 2, 0, 2)
    steps = EpisodeRunner(cartpole, 2).run(chunk.specs, "run")
    states = np.asarray(steps.column(ENV_STATE).to_pylist())
    # CartPole's observation is its state (as float32)
    assert np.allclose(states, np.asarray(steps.column(OBS).to_pylist()), atol=1e-6)


def test_minigrid_state_is_seed_and_action_replay():
    from policylm.platform.data.trajectories import ACTION_TEXT, ENV_STATE, EPISODE_RETURN, OBS, T
    from policylm.platform.envs import make_adapter
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks
    from policylm.platform.training.rewards import EnvReward

    adapter = make_adapter("MiniGrid-DoorKey-5x5-v0")
    bot = "python:policylm.platform.envs.minigrid_bot:MiniGridBot"
    (chunk,) = plan_chunks([("bot", bot)], 1, 3, 1)
    steps = EpisodeRunner(adapter, 1).run(chunk.specs, "run").to_pylist()
    assert steps[0][ENV_STATE] == [float(chunk.specs[0].seed)]  # step 0: the seed alone
    assert all(len(r[ENV_STATE]) == r[T] + 1 for r in steps)
    env = adapter.make_env()
    for row in (steps[len(steps) // 2], steps[-1]):  # replay lands on the recorded observation
        adapter.restore_state(env, row[ENV_STATE])
        assert env.unwrapped.step_count == row[T]
        obs = env.unwrapped.gen_obs()
        assert np.array_equal(adapter.flatten(env.observation(obs)), np.asarray(row[OBS]))
    # the env reward from the last state: the recorded action ends the episode with its return
    last = steps[-1]
    reward = EnvReward(adapter, policy=bot, horizon=3, gamma=1.0)
    assert reward([last[ACTION_TEXT]], [last[ENV_STATE]], [last[T]]) == pytest.approx(
        [last[EPISODE_RETURN]])
    with pytest.raises(ValueError, match="reset the env with a seed"):
        fresh = adapter.make_env()
        fresh.reset()
        adapter.save_state(fresh)
