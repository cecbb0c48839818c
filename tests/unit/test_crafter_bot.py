"""The scripted Crafter demonstrator, played on the real crafter env: it makes a table and a
wood pickaxe early, keeps drinking, its replica stays in step with the env, ``eps`` randomises
it, and a replica that differs from the env raises."""

import numpy as np
import pytest

from policylm.platform.envs.crafter import ACHIEVEMENTS, ACTIONS, INVENTORY, crafter_adapter
from policylm.platform.envs.crafter_bot import BotDiverged, CrafterBot
from policylm.platform.policies.uri import policy_from_uri
from policylm.platform.rollout.runner import derive_seed
from policylm.platform.seeds import VALIDATION_SEED

BOT = "python:policylm.platform.envs.crafter_bot:CrafterBot"
SEED = derive_seed(VALIDATION_SEED, 0)


def _play(bot, adapter, seed, steps):
    """Play ``steps`` steps (or to the end); per step: action, inventory, achievements, and
    whether the player was asleep when the action was chosen."""
    env = adapter.make_env()
    obs, _ = env.reset(seed=seed)
    bot.reset(0, seed)
    rows = []
    for _ in range(steps):
        asleep = bool(env.unwrapped.env._player.sleeping)
        action = bot.act([obs], [0])[0]
        obs, _, term, trunc, _ = env.step(action)
        rows.append((action, obs["inventory"].copy(), obs["achievements"].copy(), asleep))
        if term or trunc:
            break
    return rows


@pytest.fixture(scope="module")
def played():
    adapter = crafter_adapter(length=2000)
    return _play(CrafterBot(adapter), adapter, SEED, 500)


def _first(rows, achievement):
    i = ACHIEVEMENTS.index(achievement)
    return next((t for t, (_, _, ach, _) in enumerate(rows) if ach[i]), None)


def test_bot_makes_a_table_and_a_wood_pickaxe_early(played):
    table, pickaxe = _first(played, "place_table"), _first(played, "make_wood_pickaxe")
    assert table is not None and table < 150
    assert pickaxe is not None and table <= pickaxe < 150


def test_bot_never_goes_thirsty_in_500_steps(played):
    # 500 steps without BotDiverged: the replica stayed in step with the env throughout (the
    # despawn order crafter draws from is fixed by crafter_bot's creation-order hashes)
    assert len(played) == 500  # alive (an episode ends at health 0)
    drink = [int(inv[INVENTORY.index("drink")]) for _, inv, _, _ in played]
    assert min(drink) > 0
    assert int(played[-1][2].sum()) >= 10  # and it got somewhere


def test_bot_says_sleep_while_asleep(played):
    # the env plays sleep while the player sleeps, whatever it is given; the bot's recorded
    # action says so, so demonstrations teach the action that was played
    asleep = [action for action, _, _, was_asleep in played if was_asleep]
    assert len(asleep) >= 20  # it slept (wake_up) within 500 steps
    assert set(asleep) == {ACTIONS.index("sleep")}


def test_eps_one_acts_at_random_and_eps_is_checked():
    adapter = crafter_adapter(length=2000)
    actions = [r[0] for r in _play(CrafterBot(adapter, eps="1.0"), adapter, SEED, 150)]
    counts = np.bincount(actions, minlength=len(ACTIONS))
    assert (counts > 0).sum() >= 14  # nearly every action, none dominating
    assert counts.max() < 0.2 * len(actions)
    with pytest.raises(ValueError, match=r"eps=1\.5"):
        CrafterBot(adapter, eps=1.5)
    with pytest.raises(ValueError, match="plays Crafter"):
        CrafterBot(_NotCrafter())  # type: ignore[arg-type]


class _NotCrafter:
    env_id = "CartPole-v1"


def test_bot_refuses_a_diverged_replica():
    adapter = crafter_adapter(length=2000)
    env, bot = adapter.make_env(), CrafterBot(adapter)
    obs, _ = env.reset(seed=3)
    bot.reset(0, 4)  # the wrong seed: another world
    with pytest.raises(BotDiverged, match="no longer matches"):
        bot.act([obs], [0])
    with pytest.raises(BotDiverged, match="never reset"):
        bot.act([obs], [5])
    # wrapped in mix:, the env takes actions the replica never saw
    mixed = policy_from_uri(f"mix:{BOT}?eps=1", adapter)
    obs, _ = env.reset(seed=3)
    mixed.reset(0, 3)
    with pytest.raises(BotDiverged, match="mix:"):
        for _ in range(20):
            obs = env.step(mixed.act([obs], [0])[0])[0]
