"""The episodic-GRPO learner's pass over multi-token actions: packed rows (one row per prompt,
every action a branch under the engine's per-candidate attention mask; what
``EpisodicLearner.scores`` does) against one row per (prompt, action) (the prompt encoded again
for every action; the learner before packing), forward and backward, on BabyAI prompts (6
actions of 2 to 3 tokens) with SmolLM2-135M and a LoRA adapter, same prompts, one run.
Both sides must agree: in fp32 to rounding (|difference| <= 1e-4 nats, on a fp32 copy of the
model), and in the timed dtype (bf16 on a CPU with AMX) on the best action of every prompt.

The last line is one JSON object with the medians, ``ratio`` (packed / per-row prompts/s) and
``target`` (3); it exits 1 when the ratio or an agreement check misses.
Run: .venv/bin/python bench/learner_packing.py [--prompts 16 --repeats 3 --piece 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import finish


def learner(dtype: str, adapter: Any) -> Any:
    """An episodic learner over the embedded model with a fresh LoRA adapter in ``dtype``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policylm.platform.engines.models import resolve_model
    from policylm.platform.training.learner import EpisodicLearner

    path = resolve_model("smollm2-135m")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    return EpisodicLearner(model, AutoTokenizer.from_pretrained(path), adapter, "compact",
                           temperature=0.7)


def per_row_scores(learner: Any, prompts: list[str]) -> Any:
    """The baseline: every (prompt, action) in a row of its own, the action's scored tokens
    read after the prompt and summed: tensor [N, K] (with grad)."""
    import torch

    enc = [learner.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    k = len(learner.cand_ids)
    rows, reads, owner = [], [], []
    for i, e in enumerate(enc):
        for j, c in enumerate(learner.cand_ids):
            reads += [(len(rows), len(e) - 1 + m, tok) for m, tok in enumerate(c)]
            owner += [i * k + j] * len(c)
            rows.append(e + c)
    logp = learner._token_logps(rows, reads)
    out = torch.zeros(len(prompts) * k, dtype=logp.dtype)
    return out.index_add(0, torch.tensor(owner), logp).view(-1, k)


def step(score: Any, prompts: list[str], piece: int) -> None:
    """A policy-gradient step's forward and backward passes (on the first action of every
    prompt), ``piece`` prompts at a time as the learner's update runs them."""
    import torch

    for lo in range(0, len(prompts), piece):
        scores = score(prompts[lo:lo + piece])
        torch.log_softmax(scores / 0.7, dim=-1)[:, 0].mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--piece", type=int, default=4, help="prompts per forward and backward")
    parser.add_argument("--dtype", default="bf16", help="bf16 | fp32 (the timed dtype)")
    args = parser.parse_args()

    import torch

    from policylm.platform.engines import get_engine
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter("BabyAI-MixedTrainLocal-v0", memory=True)
    engine = get_engine("smollm2-135m", "", "hf", "fp32")  # renders the prompts only
    policy = LLMPolicy(adapter, engine, LLMPolicyConfig(target_return=1, prompt_form="compact"))
    env = adapter.make_env()
    env.action_space.seed(0)
    obs = [env.reset(seed=s)[0] for s in range(args.prompts)]
    for i in range(args.prompts):  # different states: walk each env a few random steps
        for _ in range(i % 5):
            obs[i] = env.step(env.action_space.sample())[0]
    prompts = policy.prompts(obs, list(range(args.prompts)))
    timed = learner(args.dtype, adapter)
    fast, slow = [], []
    step(timed.scores, prompts[:2], args.piece)  # warm-up
    for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
        t0 = time.perf_counter()
        step(timed.scores, prompts, args.piece)
        fast.append(len(prompts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        step(lambda ps: per_row_scores(timed, ps), prompts, args.piece)
        slow.append(len(prompts) / (time.perf_counter() - t0))
    with torch.no_grad():
        a, b = timed.scores(prompts).float(), per_row_scores(timed, prompts).float()
        same = float((a.argmax(1) == b.argmax(1)).all())
        exact = learner("fp32", adapter)
        fp32 = float((exact.scores(prompts[:2]) - per_row_scores(exact, prompts[:2])).abs().max())
    tokens = [len(c) for c in timed.cand_ids]
    finish("learner_packing", ("packed rows, prompts/s (forward and backward)",
                               statistics.median(fast)),
           ("one row per (prompt, action), prompts/s", statistics.median(slow)), target=3,
           checks={"same_best_action": (same, 1.0)},
           limits={"max_abs_logp_difference_fp32": (fp32, 1e-4)},
           max_abs_logp_difference=round(float((a - b).abs().max()), 4),
           dtype=args.dtype, env="BabyAI-MixedTrainLocal-v0", prompts=len(prompts),
           piece=args.piece,
           candidates=len(tokens), candidate_tokens={"min": min(tokens), "max": max(tokens)},
           prompt_tokens_median=statistics.median(
               len(timed.tokenizer(p)["input_ids"]) for p in prompts),
           all_packed=[round(v, 2) for v in fast], all_per_row=[round(v, 2) for v in slow])


if __name__ == "__main__":
    main()
