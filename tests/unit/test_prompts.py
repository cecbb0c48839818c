"""Prompt forms: training rows and acting prompts agree in both forms; the form recorded with an
adapter is read back; bad records and names are refused with the fix named."""

import json

import numpy as np
import pytest

from policylm.platform.data import datasets as dsx
from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig
from policylm.platform.prompts import (
    PromptFormError,
    compact_prompt,
    read_form,
    read_history,
    render_prompt,
    with_history,
    write_form,
    write_history,
)
from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks
from policylm.platform.training.sft import to_prompt_completion


def test_compact_text_by_hand():
    assert compact_prompt(500, 3, "x=0.02 v=-0.15") == "R=500 t=3 x=0.02 v=-0.15 ->"
    assert compact_prompt(12.5, 0, "o") == "R=12.5 t=0 o ->"


@pytest.mark.parametrize("form", ["chat", "compact"])
def test_training_pairs_match_acting_prompts(cartpole, engine, form):
    """What SFT trains on (prompt, completion) is what the policy prompts with and scores, in
    either form, step after step with the adaptive target."""
    (chunk,) = plan_chunks([("w", "random:")], 1, 0, 1)
    steps = EpisodeRunner(cartpole, 1).run(chunk.specs, "r")
    rows = dsx.to_chat_rows(steps, cartpole.system_text())
    pairs = to_prompt_completion(rows, form).to_pylist()
    obs = [np.asarray(o, np.float32) for o in steps.column("obs").to_pylist()]
    ret = steps.column("episode_return")[0].as_py()
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=ret, prompt_form=form))
    policy.reset(0, 0)
    for t, pair in enumerate(pairs[:4]):
        if form == "chat":
            trained = engine.tokenizer.apply_chat_template(
                pair["prompt"], tokenize=False, add_generation_prompt=True)
            answer = pair["completion"][0]["content"]
        else:
            trained, answer = pair["prompt"], pair["completion"]
            assert trained.startswith(f"R={ret - t:g} t={t} x=")
            assert answer in (" left", " right")
        assert policy.prompts([obs[t]], [0]) == [trained]
        assert render_prompt(engine, form, policy.system, ret - t, t,
                             cartpole.encode(obs[t])) == trained
        policy.act([obs[t]], [0])
        policy.observe([0], [1.0])
    assert policy.stats()["actions"] == 4


def test_form_record_round_trip_and_errors(tmp_path):
    assert read_form(None, str(tmp_path), "smollm2-135m") == "chat"  # nothing recorded
    write_form(tmp_path, "compact")
    assert json.loads((tmp_path / "policylm.json").read_text()) == {"prompt_form": "compact",
                                                                    "history": 0}
    assert read_form("", str(tmp_path)) == "compact"
    (tmp_path / "policylm.json").write_text('{"form": "compact"}')
    with pytest.raises(PromptFormError, match="expected"):
        read_form(str(tmp_path))
    with pytest.raises(PromptFormError, match="chat, compact"):
        write_form(tmp_path, "plain")


def test_unknown_form_refused(cartpole, engine):
    with pytest.raises(PromptFormError, match="unknown"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(prompt_form="json"))


def test_history_text_by_hand():
    assert with_history([], "now") == "now"
    past = [("Mission: go\na wall 2 steps left", "turn left"), ("a key 1 step forward", "pick up")]
    assert with_history(past, "Mission: go\nYou carry a red key") == (
        "Earlier:\nMission: go | a wall 2 steps left -> turn left\n"
        "a key 1 step forward -> pick up\nNow:\nMission: go\nYou carry a red key")


def test_history_record_round_trip(tmp_path):
    assert read_history(None, str(tmp_path), "smollm2-135m") == 0  # nothing recorded
    write_form(tmp_path, "compact", history=3)
    assert read_history("", str(tmp_path)) == 3 and read_form(str(tmp_path)) == "compact"
    data = tmp_path / "ds"
    data.mkdir()
    write_history(data, 16)
    assert read_history(str(data)) == 16
    (data / "policylm.json").write_text("[1, 2]")
    with pytest.raises(PromptFormError, match="unreadable"):
        read_history(str(data))


def test_rows_with_history_match_acting_prompts(cartpole, engine):
    """With history=2, a dataset row's prompt holds the episode's two earlier steps exactly as
    the acting policy renders them, step after step; act() keeps what it chose."""
    (chunk,) = plan_chunks([("w", "random:")], 1, 0, 1)
    steps = EpisodeRunner(cartpole, 1).run(chunk.specs, "r")
    rows = dsx.to_chat_rows(dsx.add_history(steps, 2), cartpole.system_text())
    pairs = to_prompt_completion(rows, "compact").to_pylist()
    obs = [np.asarray(o, np.float32) for o in steps.column("obs").to_pylist()]
    ret = steps.column("episode_return")[0].as_py()
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=ret,
                                                          prompt_form="compact", history=2))
    policy.reset(0, 0)
    for t, pair in enumerate(pairs[:5]):
        assert policy.prompts([obs[t]], [0]) == [pair["prompt"]]
        assert pair["prompt"].count(" -> ") == min(t, 2)  # one line per earlier step
        policy.remember([0], [obs[t]], [pair["completion"].strip()])  # the action the data took
        policy.t[0] += 1
        policy.observe([0], [1.0])
    assert "Earlier:" in pairs[1]["prompt"] and "Earlier:" not in pairs[0]["prompt"]
    policy.reset(0, 0)
    assert policy.prompts([obs[0]], [0]) == [pairs[0]["prompt"]]  # a new episode forgets
    (action,) = policy.act([obs[0]], [0])
    assert list(policy.past[0]) == [(cartpole.encode(obs[0]), cartpole.codec.to_text(action))]
    with pytest.raises(ValueError, match="history must be >= 0"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(history=-1))


def test_episodes_grpo_refuses_an_adapter_with_history(tmp_path):
    from policylm.jobs.grpo import GrpoJobConfig, main
    from policylm.platform.config import ConfigError

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    write_form(adapter, "compact", history=2)
    with pytest.raises(ConfigError, match="history"):
        main(GrpoJobConfig(mode="episodes", adapter=str(adapter), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
