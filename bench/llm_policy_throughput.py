"""Env steps per second of the LLM policy in score mode (batched, shared-prefix KV cache)
against the naive approach (one ``generate`` per env per step, then parsing), same model
(SmolLM2-135M, the embedded default), same envs, same number of steps, one run.

Also prints the model FLOP/s the fast path achieves and a bf16 2048x2048 matmul's FLOP/s
measured in the same run, and their ratio. The last line is one JSON object with the figures,
``ratio`` (fast / naive steps/s) and ``target`` (10).
Run: .venv/bin/python bench/llm_policy_throughput.py [--envs 32 --steps 2 --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


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


def fast(policy, adapter, n_envs: int, steps: int, seed: int) -> float:
    envs = Envs(adapter, n_envs, seed)
    slots = list(range(n_envs))
    for s in slots:
        policy.reset(s, seed + s)
    t0 = time.perf_counter()
    for _ in range(steps):
        actions = policy.act(envs.obs, slots)
        policy.observe(slots, [envs.step(i, a) for i, a in enumerate(actions)])
    return n_envs * steps / (time.perf_counter() - t0)


def naive(policy, engine, adapter, n_envs: int, steps: int, seed: int) -> tuple[float, int]:
    """One generate call per env per step (greedy, 4 new tokens: enough for any CartPole
    action and the end of turn), parsed by the codec; invalid text falls back to action 0."""
    envs = Envs(adapter, n_envs, seed)
    for s in range(n_envs):
        policy.reset(s, seed + s)
    invalid = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        for i in range(n_envs):
            prompt = policy.prompts([envs.obs[i]], [i])[0]
            text = engine.generate([prompt], max_new_tokens=4)[0]
            try:
                action = adapter.codec.parse(text)
            except ValueError:
                action, invalid = adapter.codec.from_index(0), invalid + 1
            policy.t[i] += 1
            policy.observe([i], [envs.step(i, action)])
    return n_envs * steps / (time.perf_counter() - t0), invalid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="steps per env on each side")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    from policylm.platform.engines import get_engine
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter("CartPole-v1")
    engine = get_engine(args.model, "", "hf", "auto")
    policy = LLMPolicy(adapter, engine, LLMPolicyConfig(target_return=500))
    fast(policy, adapter, args.envs, 1, seed=999)  # warm-up: prefix cache, kernels
    engine.generate([policy.prompts([Envs(adapter, 1, 0).obs[0]], [0])[0]], max_new_tokens=4)
    fast_sps, naive_sps, invalid = [], [], 0
    tokens = pairs = 0.0
    fast_seconds = 0.0
    for r in range(args.repeats):  # interleaved, so drift hits both sides alike
        t0, p0 = engine.forward_tokens, engine.attention_pairs
        start = time.perf_counter()
        fast_sps.append(fast(policy, adapter, args.envs, args.steps, seed=100 * r))
        fast_seconds += time.perf_counter() - start
        tokens += engine.forward_tokens - t0
        pairs += engine.attention_pairs - p0
        sps, bad = naive(policy, engine, adapter, args.envs, args.steps, seed=100 * r)
        naive_sps.append(sps)
        invalid += bad
    cfg = engine.model.config
    embed = cfg.vocab_size * cfg.hidden_size
    params = sum(p.numel() for p in engine.model.parameters()) - embed  # tied head not counted
    head = cfg.vocab_size * cfg.hidden_size * args.envs * args.steps * args.repeats * 2
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * pairs
    model_flops = (2 * params * tokens + head + attention) / fast_seconds
    mm = matmul_flops()
    result = {
        "bench": "llm_policy_throughput", "model": args.model, "dtype": str(engine.dtype),
        "envs": args.envs, "steps_per_env": args.steps, "repeats": args.repeats,
        "fast_steps_per_s": round(statistics.median(fast_sps), 2),
        "naive_steps_per_s": round(statistics.median(naive_sps), 2),
        "ratio": round(statistics.median(fast_sps) / statistics.median(naive_sps), 2),
        "target": 10,
        "naive_invalid_actions": invalid,
        "fast_tokens_per_s": round(tokens / fast_seconds, 1),
        "fast_model_gflops": round(model_flops / 1e9, 1),
        "bf16_matmul_gflops": round(mm / 1e9, 1),
        "fast_vs_matmul": round(model_flops / mm, 3),
        "all_fast": [round(v, 2) for v in fast_sps], "all_naive": [round(v, 2) for v in naive_sps],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
