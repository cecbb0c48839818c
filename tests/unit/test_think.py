"""Think-then-act: answers split into thought and action by hand, the policy's fallbacks
counted, thoughts kept in the trajectory and in SFT rows equal to the acting prompts, and the
format reward on the template."""

import numpy as np
import pytest

from policylm.platform.data import datasets as dsx
from policylm.platform.data import trajectories as tr
from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig
from policylm.platform.prompts import INSTRUCTION, answer, split_answer
from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks
from policylm.platform.training.rewards import bc_reward, format_reward


@pytest.mark.parametrize(("text", "thought", "action"), [
    ("The pole leans right.\nAction: right", "The pole leans right.", "right"),
    ("Leaning left, so\n  action:  left  ", "Leaning left, so", "left"),
    ("Action: left\nWait, no.\nAction: right", "Action: left\nWait, no.", "right"),
    ("I think the best action: push left", "I think the best", "push left"),
    ("The pole is falling and I", "The pole is falling and I", None),  # budget ran out
    ("Hmm.\nAction:", "Hmm.", None),  # a marker with nothing after it
    ("right", "right", None),
])
def test_answers_split_by_hand(text, thought, action):
    assert split_answer(text) == (thought, action)


def test_the_training_answer_reads_back():
    assert answer("The pole leans right.", "right") == "The pole leans right.\nAction: right"
    assert split_answer(answer("x = 0.1, so push.", "left")) == ("x = 0.1, so push.", "left")
    assert answer(None, "left") == "left"  # a row played without thinking
    assert answer("", "left") == "Action: left"  # a thinking answer with an empty thought


def test_format_and_bc_rewards_read_the_template(cartpole):
    codec = cartpole.codec
    done = ["Leaning right.\nAction: right", "right", "no marker here", "Ok.\nAction: jump",
            "Ok.\nAction: <action>left</action>"]
    assert format_reward(done, codec) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert bc_reward(done[:2], ["Because.\nAction: right", "right"], codec) == [1.0, 1.0]


class Scripted:
    """An engine stand-in whose generate() returns hand-written answers in turn (the tiny test
    model writes noise; the parsing is what is under test here)."""

    def __init__(self, engine, answers):
        self.inner, self.answers, self.asked = engine, list(answers), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, max_new_tokens=16, temperature=0.0, seed=None, seeds=None):
        self.asked.append((list(prompts), max_new_tokens))
        return [self.answers.pop(0) for _ in prompts]


def test_think_mode_acts_counts_and_keeps_thoughts(cartpole, engine):
    scripted = Scripted(engine, ["Leaning right.\nAction: right", "Out of tokens and",
                                 "Hmm.\nAction: jump", "Fine.\nAction: left"])
    policy = LLMPolicy(cartpole, scripted, LLMPolicyConfig(mode="think", think_tokens=40,
                                                           max_new_tokens=4, target_return=9))
    assert policy.system.endswith(INSTRUCTION)
    obs = [np.zeros(4, np.float32)] * 2
    for s in (0, 1):
        policy.reset(s, s)
    assert policy.act(obs, [0, 1]) == [1, 0]  # right; no action line: the first action
    assert policy.thoughts == ["Leaning right.", "Out of tokens and"]
    assert scripted.asked[0][1] == 44  # the thought's budget plus the action's
    assert policy.act(obs, [0, 1]) == [0, 0]  # an unknown action falls back too
    assert policy.stats() == {"actions": 4, "invalid": 2, "no_action": 1, "invalid_rate": 0.5,
                              "no_action_rate": 0.25}
    with pytest.raises(ValueError, match="needs prompt=chat"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(mode="think", prompt_form="compact"))


def test_thoughts_reach_the_trajectory_and_the_training_rows(cartpole, engine, monkeypatch):
    """A think-mode episode: every step's thought is in the trajectory's thought column; the
    rows built from it train on the thinking prompt and the whole answer, and each row's prompt
    is the prompt the policy acted with."""
    from policylm.platform.training.sft import to_prompt_completion

    def play(target: float) -> tuple:
        runner = EpisodeRunner(cartpole, 1)
        uri = f"hf://{engine.model_name}?dtype=fp32&mode=think&think_tokens=8&target_return={target}"
        policy = runner.policy(uri)
        seen: list[str] = []

        def generate(prompts, n, temperature, seed=None, seeds=None):  # left, right, ... thinking
            seen.extend(prompts)
            return [f"The pole leans {i}.\nAction: {'right' if i % 2 else 'left'}"
                    for i in range(len(seen) - len(prompts), len(seen))]

        monkeypatch.setattr(policy.engine, "generate", generate)
        (chunk,) = plan_chunks([("think", uri)], 1, 0, 1)
        return runner.run(chunk.specs, "r"), seen

    n = play(5)[0].num_rows
    steps, seen = play(n)  # the target the rows' return-to-go starts from: prompts match
    assert steps.num_rows == n
    assert steps.column(tr.THOUGHT).to_pylist() == [f"The pole leans {i}." for i in range(n)]
    assert steps.column(tr.ACTION_TEXT).to_pylist() == [
        "right" if i % 2 else "left" for i in range(n)]
    rows = dsx.to_chat_rows(dsx.add_rtg(steps), cartpole.system_text())
    assert rows.column(dsx.COMPLETION)[1].as_py() == "The pole leans 1.\nAction: right"
    system = rows.column(dsx.SYSTEM)[0].as_py()
    assert system.endswith(INSTRUCTION) and "Reply with the action only" not in system
    pairs = to_prompt_completion(rows, "chat").to_pylist()
    assert [engine.template.render(p["prompt"]) for p in pairs] == seen
    # a policy that does not think keeps the column empty
    plain = EpisodeRunner(cartpole, 1).run(plan_chunks([("r", "random:")], 1, 0, 1)[0].specs, "r")
    assert plain.column(tr.THOUGHT).null_count == plain.num_rows


@pytest.mark.parametrize("answer", ["I ponder the pole", "Leaning right.\nAction: right"])
def test_evaluate_reports_the_thoughts(engine, tmp_path, monkeypatch, answer):
    """evaluate with a thinking policy (the tiny model's engine, whose answers are scripted:
    never an action line, or always a valid one): its report and metrics show the first
    thoughts of each target's first episode, and the answers without an action line are
    counted through the rollout workers, so the rate is 1 and 0, not a default."""
    from policylm.jobs.evaluate import EvaluateConfig, main
    from policylm.platform.engines.hf import HFEngine

    def generate(self, prompts, *args, **kwargs):
        return [answer for _ in prompts]

    monkeypatch.setattr(HFEngine, "generate", generate)
    out = main(EvaluateConfig(policy=f"hf://{engine.model_name}?dtype=fp32&mode=think"
                                     "&think_tokens=6&max_new_tokens=2&temperature=1",
                              targets=[10, 30], episodes=1, num_workers=0, envs_per_worker=1,
                              out=str(tmp_path / "ev")))
    steps = tr.read_trajectories(tmp_path / "ev" / "trajectories")
    assert steps.column(tr.THOUGHT).null_count == 0  # every step thought
    silent = "Action:" not in answer
    for label in ("target_10", "target_30"):
        picked = out["thoughts"][label]
        assert 1 <= len(picked) <= 3 and [p["t"] for p in picked] == list(range(len(picked)))
        assert out["no_action_rate"][label] == out["invalid_rate"][label] == float(silent)
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "## Thoughts" in report and "step 0: " in report


def test_an_adapter_trained_on_thinking_rows_thinks_unasked(cartpole, engine, tmp_path):
    """sft records think mode with an adapter whose rows thought (rows_think reads the rows'
    system text); its hf:// policy then thinks without mode=think; grpo refuses it by name."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from policylm.jobs.grpo import GrpoJobConfig, resolve_start
    from policylm.platform.config import ConfigError
    from policylm.platform.policies import policy_from_uri
    from policylm.platform.prompts import think_system
    from policylm.platform.records import PromptRecord, write_record
    from policylm.platform.training.sft import rows_think

    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    plain = cartpole.system_text()
    pq.write_table(pa.table({"system": [plain, plain]}), data / "train" / "a.parquet")
    assert not rows_think(data)
    pq.write_table(pa.table({"system": [plain, think_system(plain)]}), data / "train" / "b.parquet")
    assert rows_think(data)
    model = tmp_path / "model"
    shutil.copytree(engine.model_name, model)
    write_record(model, PromptRecord("chat", think=True))
    policy = policy_from_uri(f"hf://{model}?dtype=fp32", cartpole)
    assert policy.cfg.mode == "think" and policy.system.endswith(INSTRUCTION)
    assert policy_from_uri(f"hf://{model}?dtype=fp32&mode=score", cartpole).cfg.mode == "score"
    with pytest.raises(ConfigError, match="trained to think before acting"):
        resolve_start(GrpoJobConfig(dataset=str(data), model=str(model)))


def test_merged_model_prompts_exactly_as_its_adapter(cartpole, engine, tmp_path):
    """An adapter recorded with mode=think, few-shot examples and history: merged into its
    model, the merged model's policy has the same settings and renders the same prompts."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from policylm.jobs.merge import merge
    from policylm.platform.policies import policy_from_uri
    from policylm.platform.records import PromptRecord, read_record, write_record

    torch.manual_seed(0)
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(engine.model_name),
                        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lm.save_pretrained(adapter)
    record = PromptRecord("chat", history=2, lead="Examples:\nx=0.01 v=0 a=0 w=0 -> left",
                          think=True)
    write_record(adapter, record)
    merged = merge(engine.model_name, str(adapter), tmp_path / "merged", "fp32")
    assert read_record(merged) == record  # before: form and history only (no lead, no think)
    policies = [policy_from_uri(f"hf://{engine.model_name}?dtype=fp32&adapter={adapter}",
                                cartpole), policy_from_uri(f"hf://{merged}?dtype=fp32", cartpole)]
    assert [p.cfg.mode for p in policies] == ["think", "think"]
    assert policies[0].lead == policies[1].lead == record.lead
    obs, _ = cartpole.make_env().reset(seed=0)
    for p in policies:
        p.reset(0, 0)
    assert policies[0].prompts([obs], [0]) == policies[1].prompts([obs], [0])
    assert record.lead in policies[1].prompts([obs], [0])[0]

