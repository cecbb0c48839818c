"""Prompt forms: training rows and acting prompts agree in both forms; the form recorded with an
adapter is read back; bad records and names are refused with the fix named."""

import json

import numpy as np
import pytest

from policylm.platform.data import datasets as dsx
from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig
from policylm.platform.prompts import compact_prompt, history_messages, history_start, render_prompt
from policylm.platform.records import PromptFormError, PromptRecord, read_record, write_record
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
        assert render_prompt(engine.template, form, policy.system, ret - t, t,
                             cartpole.encode(obs[t])) == trained
        policy.act([obs[t]], [0])
        policy.observe([0], [1.0])
    assert policy.stats()["actions"] == 4


def test_form_record_round_trip_and_errors(tmp_path):
    assert read_record(None, str(tmp_path), "smollm2-135m") == PromptRecord()  # nothing recorded
    assert PromptRecord().prompt_form == "chat" and PromptRecord().mode == ""
    write_record(tmp_path, PromptRecord("compact"))
    assert json.loads((tmp_path / "policylm.json").read_text()) == {"prompt_form": "compact",
                                                                    "history": 0}
    assert read_record("", str(tmp_path)).prompt_form == "compact"
    (tmp_path / "policylm.json").write_text('{"history": "two"}')
    with pytest.raises(PromptFormError, match=r"not a prompt record.*expected"):
        read_record(str(tmp_path))
    with pytest.raises(PromptFormError, match="chat, compact"):
        PromptRecord("plain")


def test_record_keeps_every_setting(tmp_path):
    record = PromptRecord("chat", history=2, lead="Example: R=1 t=0 x -> left", think=True)
    write_record(tmp_path, record)
    assert json.loads((tmp_path / "policylm.json").read_text()) == {
        "prompt_form": "chat", "history": 2, "history_format": "transcript",
        "lead": "Example: R=1 t=0 x -> left", "mode": "think"}
    back = read_record(tmp_path)
    assert back == record and back.mode == "think"


def test_unknown_form_refused(cartpole, engine):
    with pytest.raises(PromptFormError, match="unknown"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(prompt_form="json"))


def test_history_window_and_text_by_hand():
    # k=2: steps 0, 0-1, 0-2, then 2-3, 2-4, 4-5, ...: at least k, fewer than 2k
    assert [history_start(t, 2) for t in range(8)] == [0, 0, 0, 0, 2, 2, 4, 4]
    assert [history_start(t, 0) for t in (0, 5)] == [0, 5]  # no history: nothing earlier
    past = [(10.0, 0, "Mission: go\na wall 2 steps left", "turn left"),
            (9.5, 1, "a key 1 step forward", "pick up")]
    assert render_prompt(None, "compact", "", 9, 2, "You carry a red key", past) == (
        "R=10 t=0 Mission: go\na wall 2 steps left -> turn left\n"
        "R=9.5 t=1 a key 1 step forward -> pick up\n"
        "R=9 t=2 You carry a red key ->")
    assert history_messages("rules", past[1:], 9, 2, "now") == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "Target return: 9.5\nStep: 1\na key 1 step forward"},
        {"role": "assistant", "content": "pick up"},
        {"role": "user", "content": "Target return: 9\nStep: 2\nnow"}]


def test_history_record_round_trip(tmp_path):
    assert read_record(None, str(tmp_path), "smollm2-135m").history == 0  # nothing recorded
    write_record(tmp_path, PromptRecord("compact", history=3))
    assert read_record("", str(tmp_path)) == PromptRecord("compact", 3)
    data = tmp_path / "ds"
    data.mkdir()
    write_record(data, PromptRecord(history=16))  # a dataset's record: history only
    assert read_record(str(data)) == PromptRecord(None, 16)
    assert read_record(str(data)).prompt_form == "chat"
    (data / "policylm.json").write_text('{"history": 2}')  # the earlier rendering's record
    with pytest.raises(PromptFormError, match=r"earlier format.*rebuild the dataset"):
        read_record(str(data))
    (data / "policylm.json").write_text("[1, 2]")
    with pytest.raises(PromptFormError, match="not a JSON object"):
        read_record(str(data))
    (data / "policylm.json").write_text("{1, 2")
    with pytest.raises(PromptFormError, match="unreadable"):
        read_record(str(data))


@pytest.mark.parametrize("form", ["chat", "compact"])
def test_rows_with_history_match_acting_prompts(cartpole, engine, form):
    """With history=2, a dataset row's prompt holds the episode's earlier steps of the window
    exactly as the acting policy renders them, step after step (the window moves at steps 4
    and 6); between moves each prompt extends the one before; act() keeps what it chose."""
    (chunk,) = plan_chunks([("w", "random:")], 1, 0, 1)
    steps = EpisodeRunner(cartpole, 1).run(chunk.specs, "r")
    rows = dsx.to_chat_rows(dsx.add_history(steps, 2), cartpole.system_text())
    pairs = to_prompt_completion(rows, form).to_pylist()
    obs = [np.asarray(o, np.float32) for o in steps.column("obs").to_pylist()]
    ret = steps.column("episode_return")[0].as_py()
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=ret, prompt_form=form,
                                                          history=2))
    policy.reset(0, 0)
    acted = []
    for t, pair in enumerate(pairs[:8]):
        trained = engine.template.render(pair["prompt"]) if form == "chat" else pair["prompt"]
        answer = pair["completion"][0]["content"] if form == "chat" else \
            pair["completion"].strip()
        (prompt,) = policy.prompts([obs[t]], [0])
        assert prompt == trained
        assert len(policy.window(0)) == t - history_start(t, 2)
        if t and t not in (4, 6):
            assert prompt.startswith(acted[-1])  # a transcript: the last prompt, extended
        acted.append(prompt)
        policy.remember([0], [cartpole.encode(obs[t])], [policy.target(0)], [answer])
        policy.t[0] += 1
        policy.observe([0], [1.0])
    assert rows.column("messages")[3].as_py()[1:-1] == pairs[3]["prompt"][1:] \
        if form == "chat" else True  # the JSONL export holds the same turns
    policy.reset(0, 0)
    assert policy.prompts([obs[0]], [0]) == [acted[0]]  # a new episode forgets
    (action,) = policy.act([obs[0]], [0])
    assert policy.past[0] == [(ret, 0, cartpole.encode(obs[0]), cartpole.codec.to_text(action))]
    with pytest.raises(ValueError, match="history must be >= 0"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(history=-1))


def test_episodes_grpo_trains_on_the_prompts_the_policy_acted_with(cartpole, tiny_model_dir,
                                                                    monkeypatch, tmp_path):
    """Rollouts of a history=2 policy group (two sampling streams from one env seed) whose
    starting adapter was trained with few-shot examples (lead_from), then the learner's batch:
    the prompts the engine scored while acting are the batch's prompts."""
    import pyarrow as pa

    from policylm.platform.records import PromptRecord, write_record
    from policylm.platform.training.episodic_grpo import build_batch

    lead = "Examples from good episodes (observation -> action):\nx=0.01 v=0 a=0 w=0 -> left"
    write_record(tmp_path, PromptRecord("compact", 0, lead))  # as sft shots=1 records it
    uri = (f"hf://{tiny_model_dir}?history=2&prompt=compact&dtype=fp32&target_return=30"
           f"&lead_from={tmp_path}")
    chunks = plan_chunks([("a", uri), ("b", uri + "&seed_offset=1")], 1, 4, 1, shared_seeds=True)
    runner = EpisodeRunner(cartpole, 1)
    engine = runner.policy(uri).engine
    seen: list[str] = []
    score = engine.score
    monkeypatch.setattr(engine, "score", lambda prompts, cands, **kw: (
        seen.extend(prompts), score(prompts, cands, **kw))[1])
    steps = pa.concat_tables([runner.run(c.specs, "r") for c in chunks])
    assert len(set(steps.column("episode_return").to_pylist())) == 2  # (fixed seeds) a spread
    batch = build_batch(steps, cartpole, "compact", None, 30, history=2, lead=lead)
    assert (batch.groups, batch.filtered_groups, len(batch.prompts)) == (1, 0, steps.num_rows)
    assert len(seen) == steps.num_rows and any(p.count(" ->") >= 3 for p in seen)
    assert sorted(batch.prompts) == sorted(seen) and all(p.startswith(lead) for p in seen)


def test_target_dropout_writes_the_null_target_in_a_stable_share_of_rows(cartpole):
    """sft target_dropout=p: about a share p of the rows (a stable draw per episode and step,
    not the row-sampling draw) read ``R=?`` / ``Target return: ?``; every other row is as
    without dropout."""
    (chunk,) = plan_chunks([("w", "random:")], 30, 0, 30)
    rows = dsx.to_chat_rows(EpisodeRunner(cartpole, 4).run(chunk.specs, "r"),
                            cartpole.system_text())
    plain = to_prompt_completion(rows, "compact").column("prompt").to_pylist()
    dropped = to_prompt_completion(rows, "compact", 0.3).column("prompt").to_pylist()
    assert dropped == to_prompt_completion(rows, "compact", 0.3).column("prompt").to_pylist()
    null = [d.startswith("R=? t=") for d in dropped]
    assert 0.2 < sum(null) / len(null) < 0.4 and len(null) > 300
    for p, d, n in zip(plain, dropped, null, strict=True):
        assert d == (p.replace(p.split(" ")[0], "R=?", 1) if n else p)
    chat = to_prompt_completion(rows, "chat", 0.3).column("prompt").to_pylist()
    assert [c[1]["content"].startswith("Target return: ?\n") for c in chat] == null
    kept = [dsx.row_draw(e, t) < 0.3 for e, t in zip(rows.column("episode_id").to_pylist(),
                                                     rows.column("t").to_pylist(), strict=True)]
    assert kept != null  # independent of the draw that row sampling uses


def test_the_prompt_target_and_history_window_rules_by_hand():
    """The two rules the acting policy, the server's store and the learner share: the target
    written is the target less the reward earned before the step (adaptive), rounded to 2
    decimals; with history=k the window holds the steps from history_start(t, k) up to t."""
    from policylm.platform.prompts import history_window, prompt_target
    from policylm.platform.training.episodic_grpo import remaining_targets

    assert prompt_target(500, 12.344) == 487.66 and prompt_target(500, 12.344, False) == 500
    assert remaining_targets([1.0, 1.0, 0.5], 3, True) == [3.0, 2.0, 1.0]
    assert remaining_targets([1.0, 1.0, 0.5], 3, False) == [3.0, 3.0, 3.0]
    past = [(9.0, s, f"o{s}", "a") for s in range(7)]
    assert [p[1] for p in history_window(past, 7, 3)] == [3, 4, 5, 6]  # start (7 // 3 - 1) * 3
    assert [p[1] for p in history_window(past, 6, 3)] == [3, 4, 5]
    assert [p[1] for p in history_window(past, 2, 3)] == [0, 1]
    assert history_window(past, 5, 0) == []
