"""The episodic GRPO learner's memory: an update's peak does not scale with prompt length x
vocabulary, and does not grow with the number of updates (measured in a fresh process, whose
high-water mark only this work raises)."""

import json
import subprocess
import sys

PROBE = """
import json, sys, torch
from types import SimpleNamespace
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from policylm.platform.memory import peak_rss_gb
from policylm.platform.training.learner import EpisodicLearner, StepBatch

torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32),
                       LoraConfig(r=4, target_modules="all-linear"))
actions = SimpleNamespace(codec=SimpleNamespace(valid_actions=["left", "right"]))
learner = EpisodicLearner(model, AutoTokenizer.from_pretrained(sys.argv[1]), actions, "compact",
                          lr=1e-3, minibatch=32)
# 64 steps of ~100-token prompts: logits at every position would be 64 x 100 x 49152 floats
prompts = [f"R={500 - i} t={i} x={0.01 * i:.2f} v=-0.15 a=0.02 w=0.31 " * 3 + "->"
           for i in range(64)]
batch = StepBatch(prompts, [i % 2 for i in range(64)],
                  [1.0 if i % 3 else -1.0 for i in range(64)], 1, 0)
peaks = [peak_rss_gb()["self"]]
for _ in range(int(sys.argv[2])):
    learner.update(batch)
    peaks.append(peak_rss_gb()["self"])
print(json.dumps(peaks))
"""


def test_update_memory_is_bounded_and_flat_over_iterations(tiny_model_dir):
    done = subprocess.run([sys.executable, "-c", PROBE, tiny_model_dir, "3"],
                          capture_output=True, text=True, timeout=300, check=True)
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    # before the learner read only the positions it scores, the first update took 3.8 GB more
    assert peaks[1] - peaks[0] < 0.6, peaks
    assert peaks[-1] - peaks[1] < 0.05, peaks  # three updates peak where the first did
