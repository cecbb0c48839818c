"""Env steps per second of the LLM policy in score mode (every valid action scored in one batched
forward pass after the cached system prefix) against the strongest plain alternative: batched
``generate`` over the same prompts (one call per step for all envs, greedy, 4 new tokens: enough
for any CartPole action and the end of turn, then parsed by the codec). Same model (SmolLM2-135M,
the embedded default), same envs, same steps, interleaved in one run.

- Headline: the ``chat`` prompt form (what an untrained model is prompted with), target >= 2.
- ``compact_ratio``: the same comparison in the ``compact`` form (fine-tuned policies).
- ``per_env_generate_steps_per_s``: one ``generate`` per env and step (a second, weaker
  baseline, kept for comparison with earlier runs).
- ``engine_vs_ceiling`` (hf engine): the model FLOP/s of the fast path's engine calls (real
  tokens only: padding is not counted; time inside ``engine.score`` only, so env stepping,
  observation text and prompt rendering are not in it) against a sound ceiling: the
  matrix products of one forward pass at the model's own shapes (every layer's projections
  and MLP, then the output layer at the positions read) for as many tokens as an engine call
  holds, timed in the engine's dtype and in fp32 in the same run, the faster of the two.
  Target >= 0.5. The whole step's FLOP/s (everything the policy's ``act`` and the env do) is
  reported beside it (``step_model_gflops``).

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


def shape_ceiling(cfg, tokens: int, reads: int, dtype, repeats: int = 5) -> float:
    """FLOP/s of the matrix products of one forward pass over ``tokens`` tokens at the model's
    shapes (per layer: q, k, v, o projections and the gated MLP; then the output layer for
    ``reads`` positions), in ``dtype``: the rate the model's own matmuls reach here."""
    import torch

    h, inter = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = [(tokens, h, h), (tokens, h, kv), (tokens, h, kv), (tokens, h, h),
              (tokens, h, inter), (tokens, h, inter), (tokens, inter, h)]
    layers = [[(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype))
               for m, k, n in shapes]]
    head = (torch.randn(reads, h, dtype=dtype), torch.randn(h, cfg.vocab_size, dtype=dtype))
    flops = 2 * (cfg.num_hidden_layers * sum(m * k * n for m, k, n in shapes)
                 + reads * h * cfg.vocab_size)

    def forward() -> None:
        for _ in range(cfg.num_hidden_layers):
            for a, b in layers[0]:
                a @ b
        head[0] @ head[1]

    forward()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times)


class Timed:
    """``engine.score`` with the seconds spent in it and the calls counted."""

    def __init__(self, engine):
        self.engine, self.seconds, self.calls = engine, 0.0, 0
        self.inner = engine.score
        engine.score = self

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


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

    import torch

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
    tokens = pairs = fast_seconds = engine_seconds = calls = 0.0
    hf = hasattr(engine, "forward_tokens")
    timer = Timed(engine) if hf else None
    for r in range(args.repeats):  # interleaved, so drift hits every side alike
        for form, policy in policies.items():
            if hf and form == "chat":
                t0, p0 = engine.forward_tokens, engine.attention_pairs
                e0, c0 = timer.seconds, timer.calls
            start = time.perf_counter()
            fast[form].append(scored(policy, adapter, args.envs, args.steps, seed=100 * r))
            if hf and form == "chat":
                fast_seconds += time.perf_counter() - start
                tokens += engine.forward_tokens - t0
                pairs += engine.attention_pairs - p0
                engine_seconds += timer.seconds - e0
                calls += timer.calls - c0
            sps, bad = generated(policy, engine, adapter, args.envs, args.steps, 100 * r, True)
            batch[form].append(sps)
            invalid += bad
        per_env.append(generated(policies["chat"], engine, adapter, args.envs, args.steps,
                                 100 * r, False)[0])
    med = {k: statistics.median(v) for k, v in fast.items()}
    gen = {k: statistics.median(v) for k, v in batch.items()}
    checks, figures = {}, {}
    if hf:  # model FLOP/s of the fast path, real tokens only, against the model's own matmuls
        cfg = engine.model.config
        embed = cfg.vocab_size * cfg.hidden_size
        params = sum(p.numel() for p in engine.model.parameters()) - embed  # tied head
        reads = args.envs * args.steps * args.repeats  # one output-layer row per prompt
        head = 2 * cfg.vocab_size * cfg.hidden_size * reads
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * pairs
        work = 2 * params * tokens + head + attention
        per_call = max(1, round(tokens / max(calls, 1)))  # real tokens in one engine call
        ceilings = {str(dtype).removeprefix("torch."): shape_ceiling(
            cfg, per_call, max(1, round(reads / max(calls, 1))), dtype)
            for dtype in {engine.dtype, torch.float32}}  # the engine's dtype, and fp32
        ceiling = max(ceilings.values())
        checks["engine_vs_ceiling"] = (work / engine_seconds / ceiling, 0.5)
        figures = {"fast_real_tokens_per_s": round(tokens / fast_seconds, 1),
                   "engine_model_gflops": round(work / engine_seconds / 1e9, 1),
                   "step_model_gflops": round(work / fast_seconds / 1e9, 1),
                   "engine_share_of_step": round(engine_seconds / fast_seconds, 3),
                   "tokens_per_engine_call": per_call,
                   "ceiling_gflops": {k: round(v / 1e9, 1) for k, v in ceilings.items()},
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
