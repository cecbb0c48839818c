"""BabyAI as text (BALROG's form), the MixedTrainLocal tasks and the BabyAI bot policy."""

import numpy as np
import pytest

from policylm.platform.envs import make_adapter
from policylm.platform.envs.babyai import TASK_IDS, describe_view, encode_babyai
from policylm.platform.envs.babyai_bot import BabyAIBot, BotDiverged
from policylm.platform.policies import policy_from_uri

BOT = "python:policylm.platform.envs.babyai_bot:BabyAIBot"
WALL, DOOR, KEY, BALL, BOX = 2, 4, 5, 6, 7
RED, GREEN, BLUE, YELLOW = 0, 1, 2, 4


def empty_view() -> np.ndarray:
    image = np.zeros((7, 7, 3), dtype=np.int64)
    image[:, :, 0] = 1  # empty floor everywhere; the agent is at (3, 6) facing up (y falls)
    return image


def test_hand_built_view_reads_as_babyai_text():
    image = empty_view()
    image[0, 6] = (WALL, 5, 0)  # three cells to the left on the agent's row
    image[6, 6] = (WALL, 5, 0)  # three to the right ...
    image[5, 6] = (BOX, GREEN, 0)  # ... but a box stands before it: no wall on the right
    image[3, 3] = (DOOR, YELLOW, 2)  # locked door straight ahead, 3 steps
    image[3, 0] = (WALL, 5, 0)  # a wall behind the door: hidden by it
    image[1, 4] = (BALL, RED, 0)  # 2 left, 2 forward
    image[1, 2] = (KEY, BLUE, 0)  # same column, further: listed before the ball
    image[3, 6] = (KEY, RED, 0)  # the agent's own cell shows what it carries: not an object
    got = describe_view(image, carrying=np.array([KEY, RED]))
    assert got == [
        "You carry a red key",
        "a wall 3 steps left",
        "a blue key 2 steps left and 4 steps forward",
        "a red ball 2 steps left and 2 steps forward",
        "a locked yellow door 3 steps forward",
        "a green box 2 steps right",
    ]
    image = empty_view()
    image[2, 5] = (DOOR, BLUE, 0)
    image[3, 5] = (WALL, 5, 0)
    assert describe_view(image) == ["a wall 1 step forward", "a open blue door 1 step left and "
                                    "1 step forward"]  # BabyAI-Text's "a open" kept as is


def test_tasks_make_their_missions_and_rooms():
    kinds = {"goto": "go to ", "pickup": "pick up ", "open": "open the ",
             "putnext": "put the ", "pick_up_seq_go_to": ("pick up ", "go to ")}
    for task, env_id in TASK_IDS.items():
        adapter = make_adapter(env_id)
        env = adapter.make_env()
        assert adapter.codec.valid_actions[:3] == ["turn left", "turn right", "go forward"]
        assert adapter.codec.parse("go forward") == 2 and env.action_space.n == 6
        for seed in range(20):
            obs, _ = env.reset(seed=seed)
            mission = str(obs["mission"])
            start = kinds[task]
            assert mission.startswith(start), (task, mission)
            for pair in ("yellow box", "red key", "red door", "green ball", "grey door"):
                assert pair not in mission
            assert encode_babyai(obs).startswith(f"Mission: {mission}\n")
            grid = env.unwrapped
            assert (grid.num_cols, grid.max_steps) == ((2, 128) if task == "open" else (1, (
                64 if task in ("goto", "pickup") else 128)))
            objects = [c for c in grid.grid.grid if c is not None and c.type != "wall"]
            # BALROG's num_dists=0: just what the mission names (open: the door and its key)
            assert len(objects) == {"goto": 1, "pickup": 1}.get(task, 2), (task, objects)
        env.reset(seed=7)
        first = encode_babyai(env.reset(seed=7)[0])
        assert encode_babyai(env.reset(seed=8)[0]) != first  # the seed fixes the episode
        assert encode_babyai(env.reset(seed=7)[0]) == first


def test_test_level_names_only_the_held_out_pairs_and_the_bot_solves_it(play_returns):
    import re

    from policylm.platform.envs.babyai import EXCLUDED, TEST_TASK_IDS

    pairs = re.compile(r"(red|green|blue|purple|yellow|grey) (key|ball|box|door)")
    for task, env_id in TEST_TASK_IDS.items():
        env = make_adapter(env_id).make_env()
        named = set()
        for seed in range(15):
            mission = str(env.reset(seed=seed)[0]["mission"])
            found = {" ".join(m) for m in pairs.findall(mission)}
            assert found and found <= set(EXCLUDED), (task, mission)  # and nothing else
            named |= found
        assert len(named) >= 2, (task, named)  # more than one held-out pair is drawn
        assert all(r > 0 for r in play_returns(env_id, BOT, range(100, 105))), task


@pytest.mark.parametrize("split", ["train", "test"])
def test_mixed_level_plays_the_seeds_task_as_its_own_env_does(split, play_returns):
    from policylm.platform.envs.babyai import MIXED_IDS, TEST_TASK_IDS
    from policylm.platform.envs.babyai_levels import mixed_task

    ids = TASK_IDS if split == "train" else TEST_TASK_IDS
    mixed = make_adapter(MIXED_IDS[split]).make_env()
    assert [mixed_task(s) for s in range(6)] == [*TASK_IDS, "goto"]  # seed % 5
    for seed in (0, 1, 2, 3, 4, 1000003):
        single = make_adapter(ids[mixed_task(seed)]).make_env()
        a, b = mixed.reset(seed=seed)[0], single.reset(seed=seed)[0]
        assert encode_babyai(a) == encode_babyai(b)  # same mission and view
        assert (mixed.unwrapped.width, mixed.unwrapped.max_steps) == (
            single.unwrapped.width, single.unwrapped.max_steps)  # open: two rooms, 128 steps
        assert (mixed.unwrapped.grid.encode() == single.unwrapped.grid.encode()).all()
        for action in (2, 0, 2, 2, 1, 3, 2):
            x, y = mixed.step(action), single.step(action)
            assert encode_babyai(x[0]) == encode_babyai(y[0]) and x[1:4] == y[1:4]
    # the bot keeps its replica in step on the mixed level too (the replica is reset with the
    # same seed, so it plays the same task)
    assert all(r > 0 for r in play_returns(MIXED_IDS[split], BOT, range(200, 205)))


@pytest.mark.parametrize("task", list(TASK_IDS))
def test_bot_solves_every_task_and_eps_weakens_it(task, play_returns):
    expert = play_returns(TASK_IDS[task], BOT, range(100, 110))
    assert all(r > 0 for r in expert)  # the bot solves every seed
    weak = play_returns(TASK_IDS[task], f"{BOT}?eps=0.8", range(100, 110))
    assert np.mean(weak) < np.mean(expert) - 0.1  # mostly random actions: slower or failed


def test_bot_refuses_a_diverged_env_and_bad_options():
    adapter = make_adapter(TASK_IDS["goto"])
    env, bot = adapter.make_env(), BabyAIBot(adapter)
    obs, _ = env.reset(seed=3)
    bot.reset(0, 4)  # the wrong seed: another room
    with pytest.raises(BotDiverged, match="no longer matches"):
        bot.act([obs], [0])
    with pytest.raises(BotDiverged, match="never reset"):
        bot.act([obs], [5])
    with pytest.raises(ValueError, match="probability"):
        BabyAIBot(adapter, eps=2)
    with pytest.raises(ValueError, match="BabyAI levels"):
        BabyAIBot(make_adapter("MiniGrid-Empty-5x5-v0"))
    # wrapped in mix:, the env takes actions the replica never saw
    mixed = policy_from_uri(f"mix:{BOT}?eps=1", adapter)
    with pytest.raises(BotDiverged, match="mix:"):
        obs, _ = env.reset(seed=3)
        mixed.reset(0, 3)
        for _ in range(20):
            obs = env.step(mixed.act([obs], [0])[0])[0]


def test_state_round_trip():
    adapter = make_adapter(TASK_IDS["open"])
    env = adapter.make_env()
    obs, _ = env.reset(seed=11)
    for a in (0, 2, 2, 1):
        obs = env.step(a)[0]
    state = adapter.save_state(env)
    other = adapter.make_env()
    adapter.restore_state(other, state)
    assert encode_babyai(other.unwrapped.gen_obs() | {"carrying": obs["carrying"]}) == \
        encode_babyai(obs)


def test_memory_places_objects_seen_before_from_where_the_agent_stands_now():
    from policylm.platform.envs.babyai import object_name, place

    assert place(0, 0) == "here" and place(-1, -2) == "2 steps left and 1 step backward"
    adapter = make_adapter(TASK_IDS["putnext"], memory=True)
    env = adapter.make_env()
    checked = 0
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        assert obs["memory"] == ""  # nothing seen before the first view
        image = obs["image"]
        seen = {object_name(*(int(v) for v in image[x, y])): (6 - y, x - 3)
                for x in range(7) for y in range(7)
                if image[x, y, 0] > 2 and (x, y) != (3, 6)}
        for _ in range(2):  # turn around: forward f, right r becomes -f, -r
            obs = env.step(0)[0]
        view = "\n".join(describe_view(obs["image"]))
        for name, (f, r) in seen.items():
            if f"a {name} " not in view:
                assert f"a {name} {place(-f, -r)}" in obs["memory"].splitlines(), (seed, obs)
                checked += 1
        text = adapter.encode(obs)
        assert ("Out of view, seen before:" in text) == bool(obs["memory"])
    assert checked >= 5
    # without the option the observation is BALROG's: no memory key, no memory lines
    plain = make_adapter(TASK_IDS["putnext"]).make_env().reset(seed=0)[0]
    assert "memory" not in plain


def test_memory_forgets_what_was_picked_up_and_replays_from_the_state():
    adapter = make_adapter(TASK_IDS["pickup"], memory=True)
    env, bot = adapter.make_env(), policy_from_uri(BOT, adapter)
    for seed in range(100, 105):
        obs, _ = env.reset(seed=seed)
        bot.reset(0, seed)
        done, actions, states, texts = False, [], [], []
        while not done:
            actions.append(bot.act([obs], [0])[0])
            obs, _, term, trunc, _ = env.step(actions[-1])
            done = term or trunc
            states.append(adapter.save_state(env))
            texts.append(adapter.encode(obs))
        assert term and int(obs["carrying"][0]) != 0  # picked up: carried, not remembered
        carried = describe_view(obs["image"], obs["carrying"])[0].removeprefix("You carry ")
        assert not any(line.startswith(carried) for line in obs["memory"].splitlines())
        # the memory is rebuilt from the seed and actions: the next step reads the same
        i = len(actions) // 2
        other = adapter.make_env()
        adapter.restore_state(other, states[i])
        assert adapter.encode(other.step(actions[i + 1])[0]) == texts[i + 1]
