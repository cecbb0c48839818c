"""Env steps per second of the LLM policy in score mode (every valid action scored in one batched
forward pass after the cached system prefix) against the strongest plain alternative: batched
``generate`` over the same prompts (one call per step for all envs, greedy, 4 new tokens: enough
for any CartPole action and the end of turn, then parsed by the codec). Same model (SmolLM2-135M,
the embedded default), same envs, same steps, interleaved in one run.

- Headline: the ``chat`` prompt form (what an untrained model is prompted with), target >= 2.
- ``compact_ratio``: the same comparison in the ``compact`` form (fine-tuned policies).
- ``per_env_generate_steps_per_s``: one ``generate`` per env and step (a second, weaker
  baseline, kept for comparison with earlier runs).
- ``fast_vs_matmul``: the model FLOP/s of the fast path (real tokens only: padding is not
  counted) against a bf16 2048x2048 matmul measured in the same run, target >= 0.6 (hf engine).

The last line is one JSON object; the script exits 1 when a target is missed.
Run: .venv/bin/python bench/llm_policy_throughput.py [--envs 32 --steps 2 --repeats 2
     --engine hf|vllm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import finish


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


class Envs:
    """A batch of envs, each reset on its own seed and again when it finishes."""

    def __init__(self, adapter, n: int, seed: int):
        self.envs = [adapter.make_env() for _ in range(n)]
        self.obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]

    def step(self, i: int, action) -> float:
        obs, reward, term, trunc, _ = self.envs[i].step(action)
        self.obs[i] = self.envs[i].reset()[0] if term or trunc else obs
        return float(reward)


def scored(policy, adapter, n_envs: int, steps: int, seed: int) -> float:
    """The policy's own path: one scoring call per step for all envs."""
    envs = Envs(adapter, n_envs, seed)
    slots = list(range(n_envs))
    for s in slots:
        policy.reset(s, seed + s)
    t0 = time.perf_counter()
    for _ in range(steps):
        actions = policy.act(envs.obs, slots)
        policy.observe(slots, [envs.step(i, a) for i, a in enumerate(actions)])
    return n_envs * steps / (time.perf_counter() - t0)


def generated(policy, engine, adapter, n_envs: int, steps: int, seed: int,
              batched: bool) -> tuple[float, int]:
    """The same prompts answered by ``generate`` (greedy, 4 tokens), parsed by the codec (an
    invalid answer falls back to action 0 and is counted): one call per step for all envs
    (``batched``), or one per env and step."""
    envs = Envs(adapter, n_envs, seed)
    slots = list(range(n_envs))
    for s in slots:
        policy.reset(s, seed + s)
    invalid = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        prompts = policy.prompts(envs.obs, slots)
        texts = engine.generate(prompts, max_new_tokens=4) if batched else \
            [engine.generate([p], max_new_tokens=4)[0] for p in prompts]
        rewards = []
        for i, text in enumerate(texts):
            try:
                action = adapter.codec.parse(text)
            except ValueError:
                action, invalid = adapter.codec.from_index(0), invalid + 1
            rewards.append(envs.step(i, action))
        for s in slots:
            policy.t[s] += 1
        policy.observe(slots, rewards)
    return n_envs * steps / (time.perf_counter() - t0), invalid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="steps per env on each side")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    args = parser.parse_args()

    from policylm.platform.engines import get_engine
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter("CartPole-v1")
    engine = get_engine(args.model, "", args.engine, "auto")
    policies = {form: LLMPolicy(adapter, engine, LLMPolicyConfig(target_return=500,
                                                                 prompt_form=form))
                for form in ("chat", "compact")}
    for p in policies.values():  # warm-up: prefix cache, kernels, both paths
        scored(p, adapter, args.envs, 1, seed=999)
        generated(p, engine, adapter, args.envs, 1, seed=999, batched=True)
    fast: dict[str, list[float]] = {"chat": [], "compact": []}
    batch: dict[str, list[float]] = {"chat": [], "compact": []}
    per_env, invalid = [], 0
    tokens = pairs = fast_seconds = 0.0
    hf = hasattr(engine, "forward_tokens")
    for r in range(args.repeats):  # interleaved, so drift hits every side alike
        for form, policy in policies.items():
            if hf and form == "chat":
                t0, p0 = engine.forward_tokens, engine.attention_pairs
            start = time.perf_counter()
            fast[form].append(scored(policy, adapter, args.envs, args.steps, seed=100 * r))
            if hf and form == "chat":
                fast_seconds += time.perf_counter() - start
                tokens += engine.forward_tokens - t0
                pairs += engine.attention_pairs - p0
            sps, bad = generated(policy, engine, adapter, args.envs, args.steps, 100 * r, True)
            batch[form].append(sps)
            invalid += bad
        per_env.append(generated(policies["chat"], engine, adapter, args.envs, args.steps,
                                 100 * r, False)[0])
    med = {k: statistics.median(v) for k, v in fast.items()}
    gen = {k: statistics.median(v) for k, v in batch.items()}
    checks, figures = {}, {}
    if hf:  # model FLOP/s of the fast path, real tokens only, against a matmul here
        cfg = engine.model.config
        embed = cfg.vocab_size * cfg.hidden_size
        params = sum(p.numel() for p in engine.model.parameters()) - embed  # tied head
        head = cfg.vocab_size * cfg.hidden_size * args.envs * args.steps * args.repeats * 2
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * pairs
        model_flops = (2 * params * tokens + head + attention) / fast_seconds
        mm = matmul_flops()
        checks["fast_vs_matmul"] = (model_flops / mm, 0.6)
        figures = {"fast_real_tokens_per_s": round(tokens / fast_seconds, 1),
                   "fast_model_gflops": round(model_flops / 1e9, 1),
                   "bf16_matmul_gflops": round(mm / 1e9, 1),
                   "padded_tokens_share": round(engine.padded_tokens / max(
                       engine.padded_tokens + engine.forward_tokens, 1), 3)}
    finish("llm_policy_throughput", ("score + prefix cache (chat form), steps/s", med["chat"]),
           ("batched generate (chat form), steps/s", gen["chat"]), target=2,
           checks=checks, engine=args.engine, model=args.model,
           dtype=str(getattr(engine, "dtype", "auto")), envs=args.envs, steps_per_env=args.steps,
           repeats=args.repeats,
           compact_ratio=round(med["compact"] / gen["compact"], 2),
           compact_fast_steps_per_s=round(med["compact"], 2),
           compact_generate_steps_per_s=round(gen["compact"], 2),
           per_env_generate_steps_per_s=round(statistics.median(per_env), 2),
           ratio_vs_per_env_generate=round(med["chat"] / statistics.median(per_env), 2),
           generate_invalid_answers=invalid, **figures,
           all_fast_chat=[round(v, 2) for v in fast["chat"]],
           all_generate_chat=[round(v, 2) for v in batch["chat"]])


if __name__ == "__main__":
    main()
