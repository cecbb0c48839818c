"""The engine contract: scores equal brute-force summed log-probs, prefix caching changes
nothing, batching changes nothing, long prompts are truncated, bad models/adapters are named.
Every engine runs the same contract tests; vllm's skip where it cannot run."""

import itertools

import numpy as np
import pytest
import torch

from policylm.platform.engines import EngineError, get_engine, softmax
from policylm.platform.engines.vllm import vllm_unavailable_reason

SYSTEM = "CartPole: keep the pole upright. Valid actions: left, right."
USERS = [f"Target return: {r}\nStep: {t}\nx=0.1 v=0 a=0.02 w=-0.1"
         for r, t in ((10, 0), (500, 3), (77, 12))]
ENGINES = ["hf", pytest.param("vllm", marks=pytest.mark.skipif(
    vllm_unavailable_reason() is not None, reason=str(vllm_unavailable_reason())))]


def common(a, b, most):
    """Length of the common prefix of token lists ``a`` and ``b``, at most ``most``."""
    n = 0
    while n < min(len(a), len(b), most) and a[n] == b[n]:
        n += 1
    return n


def brute_force(engine, prompt, cand, terminator):
    """Sum of log p(token | everything before), one token at a time, no cache, no batch."""
    ids = engine.encode(prompt)
    toks = engine.encode(cand) + ([engine.end_id] if terminator else [])
    total = 0.0
    with torch.no_grad():
        for k, tok in enumerate(toks):
            logits = engine.model(torch.tensor([ids + toks[:k]])).logits[0, -1].float()
            total += float(torch.log_softmax(logits, -1)[tok])
    return total


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, tiny_model_dir):
    return get_engine(tiny_model_dir, "", request.param, "fp32")


@pytest.mark.parametrize("cands", [["left", "right"], ["pickup", "toggle", "left"]])
def test_score_equals_brute_force_and_prefix_cache_is_exact(engine, cands):
    prompts = [engine.template.prompt(SYSTEM, u) for u in USERS]
    plain = engine.score(prompts, [cands] * 3)
    cached = engine.score(prompts, [cands] * 3, prefix=engine.template.prefix(SYSTEM))
    again = engine.score(prompts, [cands] * 3, prefix=engine.template.prefix(SYSTEM))  # cache hit
    assert np.allclose(plain, cached, atol=1e-5) and np.allclose(cached, again, atol=0)
    if engine.name == "hf":  # single-token candidates need no terminator (prefix-free set)
        multi = any(len(engine.encode(c)) > 1 for c in cands)
        ref = [[brute_force(engine, p, c, multi) for c in cands] for p in prompts]
        assert np.allclose(plain, ref, atol=1e-4)


@pytest.mark.parametrize("cands", [["left", "right"], ["pickup", "toggle", "left"]])
def test_sessions_reuse_the_cached_prompt_and_change_no_score(engine, cands):
    """An episode's prompts, each extending the one before (a transcript) except where the
    window moves: with a session per episode the scores equal the uncached ones (and brute
    force), while only the new tokens are computed; two interleaved episodes keep their own."""
    turns = [f"Target return: {9 - t}\nStep: {t}\nx=0.{t} v=0" for t in range(5)]
    msgs = [{"role": "system", "content": SYSTEM}]
    episode = []
    for t, user in enumerate(turns):
        msgs = [*msgs, {"role": "user", "content": user}]
        episode.append(engine.template.render(msgs))
        msgs = [*msgs, {"role": "assistant", "content": cands[t % len(cands)]}]
    moved = engine.template.render([msgs[0], *msgs[5:]])  # the window's start moved
    prompts = [*episode, moved]
    other = [engine.template.prompt(SYSTEM, u) for u in USERS]
    plain = engine.score(prompts, [cands] * len(prompts))
    reused0 = getattr(engine, "reused_tokens", 0)
    a, b = ("a", *cands), ("b", *cands)  # new keys (the engine is the module's)
    got, got_other = [], []
    for k, prompt in enumerate(prompts):  # one call per step, interleaved with episode b
        got += engine.score([prompt], [cands], sessions=[a])
        if k < len(other):
            got_other += engine.score([other[k]], [cands], sessions=[b])
    assert np.allclose(got, plain, atol=1e-4)
    assert np.allclose(got_other, engine.score(other, [cands] * len(other)), atol=1e-4)
    if engine.name == "hf":
        multi = any(len(engine.encode(c)) > 1 for c in cands)
        assert np.allclose(got[3], [brute_force(engine, prompts[3], c, multi) for c in cands],
                           atol=1e-4)
        # each prompt computes only its tokens after the common prefix with the one before
        def reused(seq):
            ids = [engine.encode(p) for p in seq]
            return [common(x, y, len(y) - 1) for x, y in itertools.pairwise(ids)], ids

        mine, ids = reused(prompts)
        assert mine[:4] == [len(x) for x in ids[:4]]  # a transcript: all of the last prompt
        assert 0 < mine[4] < len(ids[4])  # the window moved: the system turn still
        assert engine.reused_tokens - reused0 == sum(mine) + sum(reused(other)[0])
        assert {a, b} <= set(engine._sessions)
    with pytest.raises(ValueError, match="one session key per prompt"):
        engine.score(prompts[:2], [cands] * 2, sessions=["a"])


def test_batch_splitting_changes_nothing(tiny_model_dir):
    from policylm.platform.engines.hf import HFEngine

    small = HFEngine(tiny_model_dir, dtype="fp32", max_batch_tokens=40)
    big = get_engine(tiny_model_dir, "", "hf", "fp32")
    prompts = [big.template.prompt(SYSTEM, u) for u in USERS]
    for cands in (["left", "right"], ["pickup", "toggle"]):
        assert np.allclose(small.score(prompts, [cands] * 3), big.score(prompts, [cands] * 3),
                           atol=1e-5)


def test_prompt_longer_than_context_is_truncated_with_a_warning(tmp_path):
    from policylm.platform.engines.hf import HFEngine
    from policylm.platform.engines.models import save_tiny_model

    path = save_tiny_model(tmp_path / "short", seed=1)
    engine = HFEngine(str(path), dtype="fp32")
    engine.max_length = 64
    prompt = engine.template.prompt(SYSTEM, "Target return: 10\nStep: 3\n" + "x=0.1 " * 200)
    with pytest.warns(UserWarning, match="exceeds the model context"):
        scores = engine.score([prompt], [["left", "right"]], prefix=engine.template.prefix(SYSTEM))
    assert np.all(np.isfinite(scores[0])) and engine.truncated == 1
    kept = engine.tokenizer.decode(engine._fit(engine.encode(prompt), 1))
    assert len(engine._fit(engine.encode(prompt), 1)) == 63
    # the target and step survive; the observation's end is dropped; the answer header stays
    assert "Target return: 10\nStep: 3\nx=0.1" in kept
    assert kept.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_generate_returns_one_text_per_prompt(engine):
    prompts = [engine.template.prompt(SYSTEM, u) for u in USERS]
    texts = engine.generate(prompts, max_new_tokens=4)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert engine.generate(prompts, max_new_tokens=4) == texts  # greedy: deterministic


def test_lora_adapter_loads_and_changes_scores(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj",
                                                                               "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero; move it so the adapter changes the model
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(tmp_path / "adapter")
    plain = get_engine(tiny_model_dir, "", "hf", "fp32")
    tuned = get_engine(tiny_model_dir, str(tmp_path / "adapter"), "hf", "fp32")
    prompt = [plain.template.prompt(SYSTEM, USERS[0])]
    assert not np.allclose(plain.score(prompt, [["left", "right"]]),
                           tuned.score(prompt, [["left", "right"]]), atol=1e-4)


def test_bad_model_and_adapter_are_named(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from policylm.platform.engines.hf import HFEngine
    from policylm.platform.engines.models import save_tiny_model

    with pytest.raises(EngineError, match=r"model '.*nowhere' could not be loaded"):
        HFEngine(str(tmp_path / "nowhere"))
    other = save_tiny_model(tmp_path / "wide", hidden=96, heads=4, kv_heads=2)
    from transformers import AutoModelForCausalLM

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(other),
                          LoraConfig(r=4, target_modules=["q_proj"]))
    peft.save_pretrained(tmp_path / "wide_adapter")
    with pytest.raises(EngineError, match="does not load on base model"):
        HFEngine(tiny_model_dir, adapter=str(tmp_path / "wide_adapter"))
    with pytest.raises(EngineError, match="engine 'tpu' is unknown"):
        get_engine(tiny_model_dir, "", "tpu", "auto")


def test_vllm_says_why_it_cannot_run():
    reason = vllm_unavailable_reason()
    if reason is None:
        pytest.skip("vllm can run here")
    from policylm.platform.engines.vllm import VLLMEngine

    with pytest.raises(EngineError, match="engine=vllm cannot run here"):
        VLLMEngine("smollm2-135m")


def test_softmax_temperature():
    p = softmax(np.log([0.2, 0.8]))
    assert np.allclose(p, [0.2, 0.8])
    sharp = softmax(np.log([0.2, 0.8]), temperature=0.5)  # p^2 normalised: .04/.68, .64/.68
    assert np.allclose(sharp, [0.04 / 0.68, 0.64 / 0.68])


def test_engines_share_the_scoring_rule_and_dtype_names():
    from policylm.platform.engines.contract import dtype_name, scored_tokens

    # single-token candidates score their token alone; with one longer candidate every
    # candidate's score includes the end of turn (end id 9 here)
    assert scored_tokens([[[1], [2]], [[3], [4]]], 9) == [[[1], [2]], [[3], [4]]]
    assert scored_tokens([[[1], [2, 5]]], 9) == [[[1, 9], [2, 5, 9]]]
    assert [dtype_name(d) for d in ("bf16", "fp32", "auto", "float16")] == \
        ["bfloat16", "float32", "auto", "float16"]
    with pytest.raises(EngineError, match="dtype 'int8' is unknown"):
        dtype_name("int8")


@pytest.mark.skipif(vllm_unavailable_reason() is not None,
                    reason=str(vllm_unavailable_reason()))
def test_hf_and_vllm_score_alike_and_take_lora_weights_alike(tiny_model_dir):
    """On a GPU: both engines give the same scores for the same prompts, before and after the
    same LoRA weights (set_lora)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    hf = get_engine(tiny_model_dir, "", "hf", "fp32", live="contract")
    vllm = get_engine(tiny_model_dir, "", "vllm", "fp32", live="contract")
    prompts = [hf.template.prompt(SYSTEM, u) for u in USERS]
    for cands in (["left", "right"], ["pickup", "toggle", "left"]):
        assert np.allclose(hf.score(prompts, [cands] * 3), vllm.score(prompts, [cands] * 3),
                           atol=2e-3)
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False))
    weights = {k: v.detach().float() for k, v in get_peft_model_state_dict(peft).items()}
    hf.set_lora(weights, 2.0)
    vllm.set_lora(weights, 2.0)
    assert np.allclose(hf.score(prompts, [["left", "right"]] * 3),
                       vllm.score(prompts, [["left", "right"]] * 3), atol=2e-3)
