"""What generation reports and where its randomness comes from: the generated tokens and why
they stopped (chat's ``finish_reason`` and ``usage`` read them, not a re-encoding of the text),
and one random stream per row (an episode's generate- and think-mode answers do not depend on
the other prompts of the engine call, nor on torch's global RNG)."""

import numpy as np
import pytest
import torch

from policylm.platform.engines import get_engine
from policylm.platform.engines.vllm import vllm_unavailable_reason
from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig
from policylm.platform.serving import ChatRequest, PolicyService

SYSTEM = "You balance a pole."
ENGINES = ["hf", pytest.param("vllm", marks=pytest.mark.skipif(
    vllm_unavailable_reason() is not None, reason=str(vllm_unavailable_reason())))]


@pytest.fixture(scope="module", params=ENGINES)
def gen(request, tiny_model_dir):
    return get_engine(tiny_model_dir, "", request.param, "fp32")


@pytest.fixture(scope="module")
def service(tiny_model_dir):
    return PolicyService(f"hf://{tiny_model_dir}?temperature=0&dtype=fp32")


def test_a_reply_cut_at_max_tokens_says_length_and_counts_its_tokens(service):
    """The tiny model's greedy reply is newlines, never an end of turn: the text is empty after
    stripping, yet three tokens were generated and the reply was cut."""
    req = ChatRequest(messages=[{"role": "user", "content": "Say left or right."}],
                      max_tokens=3, n=2, temperature=0)
    (out,) = service.chat([req])
    assert [c["finish_reason"] for c in out["choices"]] == ["length", "length"]
    prompt = service.policy.engine.template.render([{"role": "user",
                                                   "content": "Say left or right."}])
    n = len(service.policy.engine.encode(prompt))
    assert out["usage"] == {"prompt_tokens": n, "completion_tokens": 6, "total_tokens": n + 6}


def test_generation_details_by_hand(gen, monkeypatch):
    """Cut at max_new_tokens: 'length' and that many tokens; ending its turn: 'stop', the
    tokens up to and with the end of turn, and the text without it (the newline the tiny model
    writes first is made its end of turn here)."""
    prompt = gen.template.prompt(SYSTEM, "Left or right?")
    (cut,) = gen.generate_details([prompt], 4)
    assert cut.finish_reason == "length" and len(cut.token_ids) == 4
    assert cut.text == gen.tokenizer.decode(cut.token_ids, skip_special_tokens=True).strip()
    newline = gen.encode("\n")[0]
    assert cut.token_ids[0] == newline
    monkeypatch.setattr(gen, "end_id", newline)
    short, long = gen.generate_details([prompt, gen.template.prompt(SYSTEM, "x " * 30)], 4)
    assert (short.finish_reason, short.token_ids, short.text) == ("stop", [newline], "")
    assert long.finish_reason == "stop" and long.token_ids[-1] == newline


def test_each_row_samples_from_its_own_seed(gen):
    """A row's sample depends on its prompt and seed only: alone or batched with other
    (longer, shorter) prompts, and whatever torch's global RNG holds."""
    prompts = [gen.template.prompt(SYSTEM, u) for u in ("x=0.1", "x=-0.3 v=0.2 " * 5, "go")]
    torch.manual_seed(1)
    alone = gen.generate_details(prompts[:1], 8, temperature=1.0, seeds=[11])
    torch.manual_seed(2)
    batched = gen.generate_details(prompts, 8, temperature=1.0, seeds=[11, 12, 13])
    assert batched[0].token_ids == alone[0].token_ids
    again = gen.generate_details(prompts[::-1], 8, temperature=1.0, seeds=[13, 12, 11])
    assert [g.token_ids for g in again[::-1]] == [g.token_ids for g in batched]
    other = gen.generate_details(prompts[:1], 8, temperature=1.0, seeds=[99])
    assert other[0].token_ids != alone[0].token_ids  # it samples: another seed, another text


class Recording:
    """The engine, keeping every generated text (what the policy parsed)."""

    def __init__(self, engine):
        self.inner, self.texts = engine, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, *args, **kwargs):
        out = self.inner.generate(prompts, *args, **kwargs)
        self.texts.append(out)
        return out


@pytest.mark.parametrize("mode", ["generate", "think"])
def test_an_episode_generates_the_same_alone_or_batched(cartpole, engine, mode):
    """Slot 0's episode (seed 5) played alone, and with two other episodes in the same engine
    calls: its generated answers are the same, step by step (its own random stream, as scoring
    has), and torch's global RNG does not enter."""
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 0.1, (3, 3, 4)).astype(np.float32)  # step, slot, features

    def play(slots):
        recorder = Recording(engine)
        policy = LLMPolicy(cartpole, recorder, LLMPolicyConfig(
            mode=mode, temperature=1.0, max_new_tokens=6, think_tokens=6, target_return=20))
        for s in slots:
            policy.reset(s, 5 + 10 * s)
        for t in range(3):
            torch.manual_seed(100 * len(slots) + t)  # unrelated global state each call
            policy.act([obs[t, s] for s in slots], slots)
        return [texts[0] for texts in recorder.texts]

    alone = play([0])
    assert alone == play([0, 1, 2])
    assert len(set(alone)) > 1 or alone[0]  # real samples, not one empty answer
