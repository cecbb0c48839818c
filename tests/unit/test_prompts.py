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
    render_prompt,
    write_form,
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
    assert json.loads((tmp_path / "policylm.json").read_text()) == {"prompt_form": "compact"}
    assert read_form("", str(tmp_path)) == "compact"
    (tmp_path / "policylm.json").write_text('{"form": "compact"}')
    with pytest.raises(PromptFormError, match="expected"):
        read_form(str(tmp_path))
    with pytest.raises(PromptFormError, match="chat, compact"):
        write_form(tmp_path, "plain")


def test_unknown_form_refused(cartpole, engine):
    with pytest.raises(PromptFormError, match="unknown"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(prompt_form="json"))
