"""Scoring multi-token actions: packed rows (one row per prompt, every candidate after it under
a per-candidate attention mask; the engine's path) against one row per (prompt, candidate)
(the prompt encoded again for every candidate; the engine's path before packing), on Crafter
observations (17 action names of 1-6 tokens) with SmolLM2-135M, same prompts, one run.
Both sides must give the same log-likelihoods: in fp32 to rounding (|difference| <= 1e-4 nats,
checked on a fp32 copy of the model in the same run), and in the timed dtype (bf16 on this CPU)
within the documented bf16 tolerance: the same best action for every prompt, and |difference| <=
0.1 nats per scored token (bf16 keeps 8 bits of mantissa, and the two layouts add the same
numbers in another order: up to 0.44 nats over an 8-token action was seen here).

The last line is one JSON object with the medians, ``ratio`` (packed / per-candidate prompts/s)
and ``target`` (5); it exits 1 when the ratio or an agreement check misses.
Run: .venv/bin/python bench/score_packing.py [--envs 8 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import finish


def per_candidate_rows(engine, prompts: list[str], candidates: list[str], prefix: str
                       ) -> list[np.ndarray]:
    """The baseline: one row per (prompt, candidate) = prompt rest + candidate + end of turn."""
    import torch

    cand = [engine.encode(c) for c in candidates]
    longest = max(len(c) for c in cand) + 1
    ids = [engine._fit(engine.encode(p), longest) for p in prompts]
    n_pre, cache = engine._prefix_cache(prefix, ids)
    rows, owners = [], []
    for i, r in enumerate(ids):
        for j, c in enumerate(cand):
            rows.append((r[n_pre:], [*c, engine.end_id]))
            owners.append((i, j))
    scores = [np.zeros(len(cand)) for _ in prompts]
    with torch.inference_mode():
        for lo, hi in engine._batches([len(a) + len(b) for a, b in rows]):
            part = rows[lo:hi]
            hidden = engine._hidden([a + b for a, b in part], n_pre, cache)
            picks, spans = [], []
            for k, (a, b) in enumerate(part):
                spans.append((len(picks), b))
                picks += [(k, len(a) - 1 + t) for t in range(len(b))]
            lp = engine._logprobs_at(hidden, picks)
            for k, (start, b) in enumerate(spans):
                i, j = owners[lo + k]
                scores[i][j] = float(lp[torch.arange(start, start + len(b)), torch.tensor(b)].sum())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=8, help="prompts scored per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--form", default="compact", help="prompt form: compact | chat")
    parser.add_argument("--dtype", default="auto", help="auto | bf16 | fp32")
    args = parser.parse_args()

    from policylm.platform.engines import get_engine
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter("Crafter", length=100)
    engine = get_engine(args.model, "", "hf", args.dtype)
    policy = LLMPolicy(adapter, engine, LLMPolicyConfig(target_return=5, prompt_form=args.form))
    env = adapter.make_env()
    env.action_space.seed(0)
    obs = [env.reset(seed=s)[0] for s in range(args.envs)]
    for i, o in enumerate(obs):  # different states: walk each env a few random steps
        for _ in range(i * 3):
            o = env.step(env.action_space.sample())[0]
        obs[i] = o
    prompts = policy.prompts(obs, list(range(args.envs)))
    cands = policy.candidates
    packed = engine.score(prompts, [cands] * len(prompts), prefix=policy.prefix)  # warm-up
    rows = per_candidate_rows(engine, prompts, cands, policy.prefix)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(packed, rows, strict=True))
    per_token = np.array([len(engine.encode(c)) + 1 for c in cands])  # with the end of turn
    diff_per_token = max(float((np.abs(a - b) / per_token).max())
                         for a, b in zip(packed, rows, strict=True))
    fast, slow = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
        t0 = time.perf_counter()
        engine.score(prompts, [cands] * len(prompts), prefix=policy.prefix)
        fast.append(len(prompts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        per_candidate_rows(engine, prompts, cands, policy.prefix)
        slow.append(len(prompts) / (time.perf_counter() - t0))
    tokens = [len(engine.encode(c)) for c in cands]
    exact = get_engine(args.model, "", "hf", "fp32")  # the agreement check in fp32
    fp32 = max(float(np.abs(a - b).max()) for a, b in zip(
        exact.score(prompts[:2], [cands] * 2, prefix=policy.prefix),
        per_candidate_rows(exact, prompts[:2], cands, policy.prefix), strict=True))
    same_choice = all(int(np.argmax(a)) == int(np.argmax(b))
                      for a, b in zip(packed, rows, strict=True))
    finish("score_packing", ("packed rows, prompts/s", statistics.median(fast)),
           ("one row per (prompt, action), prompts/s", statistics.median(slow)), target=5,
           checks={"same_best_action": (float(same_choice), 1.0)},
           limits={"max_abs_logp_difference_fp32": (fp32, 1e-4),
                   f"max_abs_logp_difference_per_token_{str(engine.dtype).split('.')[-1]}":
                   (diff_per_token, 0.1)},
           max_abs_logp_difference=round(diff, 4),
           model=args.model, dtype=str(engine.dtype), env="Crafter", form=args.form,
           prompts=len(prompts), candidates=len(cands),
           candidate_tokens={"min": min(tokens), "max": max(tokens), "sum": sum(tokens)},
           prompt_tokens_median=statistics.median(len(engine.encode(p)) for p in prompts),
           all_packed=[round(v, 2) for v in fast], all_per_candidate=[round(v, 2) for v in slow])


if __name__ == "__main__":
    main()
