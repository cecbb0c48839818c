"""The episodic GRPO learner's update: its passes in pieces of at most ``micro_tokens`` tokens
(the default, 512) against the whole minibatch at once, each in a fresh process (whose memory
high-water mark only the update raises): one update of 64 CartPole chat prompts with
SmolLM2-135M and a LoRA r=16 adapter on every linear layer, as ``grpo-episodes`` builds them.

Figures: each side's update seconds and peak resident memory. Target: the pieces' process
within the benches' memory limit, at no more than a quarter more time than the whole
minibatch's update (ratio of updates per second >= 0.8).
Run: .venv/bin/python bench/learner_memory.py [--rows 64 --micro-tokens 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import MAX_PEAK_RSS_GB, finish

PROBE = """
import json, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from policylm.platform.engines.models import resolve_model
from policylm.platform.envs import make_adapter
from policylm.platform.memory import peak_rss_gb
from policylm.platform.prompts import render_prompt
from policylm.platform.training.learner import EpisodicLearner, StepBatch

rows, micro = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
path = resolve_model("smollm2-135m")
model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                       LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
env = make_adapter("CartPole-v1")
tok = AutoTokenizer.from_pretrained(path)
learner = EpisodicLearner(model, tok, env, "chat", lr=1e-4, minibatch=rows, micro_tokens=micro)
obs = "x=0.0123 v=-0.1512 a=0.0234 w=0.3123"
prompts = [render_prompt(learner.template, "chat", env.system_text(), 500 - i, i, obs)
           for i in range(rows)]
batch = StepBatch(prompts, [i % 2 for i in range(rows)],
                  [1.0 if i % 3 else -1.0 for i in range(rows)], 1, 0)
before = peak_rss_gb()["self"]
t0 = time.perf_counter()
learner.update(batch)
print(json.dumps({"seconds": time.perf_counter() - t0, "before_gb": before,
                  "peak_gb": peak_rss_gb()["self"],
                  "tokens": sum(len(tok(p)["input_ids"]) for p in prompts)}))
"""


def update(rows: int, micro_tokens: int) -> dict:
    """One update in a fresh process: its seconds, the peak memory before and after."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(rows), str(micro_tokens)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--micro-tokens", type=int, default=512)
    args = parser.parse_args()
    pieces = update(args.rows, args.micro_tokens)
    whole = update(args.rows, 10**9)
    finish("learner_memory", ("updates/s in pieces", 1 / pieces["seconds"]),
           ("updates/s of the whole minibatch", 1 / whole["seconds"]), target=0.8,
           limits={"pieces_peak_gb": (pieces["peak_gb"], MAX_PEAK_RSS_GB)},
           rows=args.rows, micro_tokens=args.micro_tokens, tokens=pieces["tokens"],
           pieces={k: round(v, 3) for k, v in pieces.items()},
           whole={k: round(v, 3) for k, v in whole.items()},
           memory_ratio=round((whole["peak_gb"] - whole["before_gb"])
                              / max(pieces["peak_gb"] - pieces["before_gb"], 1e-9), 2))


if __name__ == "__main__":
    main()
