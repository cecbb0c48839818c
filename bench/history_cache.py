"""Acting with history (``history=16``, BALROG's length) when the engine reuses each episode's
cached prompt (sessions: a step computes only its new tokens) against the same policy whose
engine encodes every prompt's whole window again (the system-prefix cache only, which is what
a history prompt got before sessions). Same model (SmolLM2-135M, the embedded default), same
BabyAI envs and seeds, greedy, interleaved in one run; the window holds 16 to 31 earlier steps.

- Headline: env steps/s, sessions against re-encoding, target >= 2.
- ``same_actions``: the share of steps where both sides chose the same action (greedy; the two
  paths differ only by rounding), check >= 0.95.
- ``computed_tokens_per_step``: prompt tokens computed per step on each side.

The last line is one JSON object; the script exits 1 when a target is missed.
Run: .venv/bin/python bench/history_cache.py [--envs 4 --steps 32 --repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import finish

ENV_ID = "BabyAI-MixedTrainLocal-goto-v0"


class Reencode:
    """The engine, with every prompt encoded whole (no sessions)."""

    def __init__(self, engine):
        self.engine = engine

    def score(self, prompts, candidates, prefix=None, sessions=None):
        return self.engine.score(prompts, candidates, prefix=prefix)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def play(policy, adapter, n_envs: int, steps: int, seed: int) -> tuple[float, list]:
    """Env steps/s over ``steps`` steps of ``n_envs`` envs (an env that finishes starts a new
    episode, and its slot a new history), and the actions taken."""
    envs = [adapter.make_env() for _ in range(n_envs)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    slots = list(range(n_envs))
    for s in slots:
        policy.reset(s, seed + s)
    actions_taken = []
    t0 = time.perf_counter()
    for _ in range(steps):
        actions = policy.act(obs, slots)
        actions_taken += [int(a) for a in actions]
        rewards, ended = [], []
        for i, a in enumerate(actions):
            o, r, term, trunc, _ = envs[i].step(a)
            rewards.append(float(r))
            if term or trunc:
                o = envs[i].reset()[0]
                ended.append(i)
            obs[i] = o
        policy.observe(slots, rewards)  # before the ended slots' new episodes start
        for i in ended:
            policy.reset(i, seed + 1000 + i)
    return n_envs * steps / (time.perf_counter() - t0), actions_taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32, help="steps per env on each side")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--history", type=int, default=16)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    from policylm.platform.engines import get_engine
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    adapter = make_adapter(ENV_ID)
    engine = get_engine(args.model, "", "hf", "auto")
    cfg = LLMPolicyConfig(target_return=1, temperature=0, prompt_form="compact",
                          history=args.history)
    sides = {"sessions": LLMPolicy(adapter, engine, cfg),
             "reencode": LLMPolicy(adapter, Reencode(engine), cfg)}
    for policy in sides.values():  # warm-up
        play(policy, adapter, args.envs, 2, seed=999)
    speed: dict[str, list[float]] = {k: [] for k in sides}
    tokens: dict[str, int] = dict.fromkeys(sides, 0)
    same = total = 0
    for r in range(args.repeats):  # interleaved, so drift hits both sides alike
        taken = {}
        for name, policy in sides.items():
            before = engine.forward_tokens
            sps, taken[name] = play(policy, adapter, args.envs, args.steps, seed=100 * r)
            speed[name].append(sps)
            tokens[name] += engine.forward_tokens - before
        same += sum(a == b for a, b in zip(taken["sessions"], taken["reencode"], strict=True))
        total += len(taken["sessions"])
    med = {k: statistics.median(v) for k, v in speed.items()}
    steps = args.envs * args.steps * args.repeats
    finish("history_cache", ("sessions (cached prompt reused), steps/s", med["sessions"]),
           ("re-encode the window every step, steps/s", med["reencode"]), target=2,
           checks={"same_actions": (same / total, 0.95)}, model=args.model, env=ENV_ID,
           history=args.history, envs=args.envs, steps_per_env=args.steps,
           repeats=args.repeats,
           computed_tokens_per_step={k: round(v / steps, 1) for k, v in tokens.items()},
           all_sessions=[round(v, 2) for v in speed["sessions"]],
           all_reencode=[round(v, 2) for v in speed["reencode"]])


if __name__ == "__main__":
    main()
