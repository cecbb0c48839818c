"""Online episodic GRPO on CartPole in one process, on policylm's pieces (a reading reference).

What ``policylm grpo-episodes`` does, without Ray, actors or tracking: the return-
conditioned LLM policy plays groups of episodes from shared env seeds, each episode's return
normalised within its group is the advantage of every action in it, and a clipped update of the
LoRA adapter follows; the new weights reach the policy's engine before the next iteration. At
the end the starting and the trained weights play the same held-out seeds.

    python examples/grpo_cartpole.py                                  # the embedded SmolLM2
    python examples/grpo_cartpole.py --adapter runs/demo/sft/adapter  # from the demo's adapter
    python examples/grpo_cartpole.py --model DIR --iterations 2       # any local model

Each piece is the one the job uses: ``plan_groups`` (the work plan), ``EpisodeRunner`` (the
batched episode loop), ``build_batch`` (advantages and the prompts the policy acted on),
``EpisodicLearner`` (log-probabilities as the engine scores them; the clipped objective) and
``HFEngine.set_lora`` (new weights into the acting engine without reloading the model).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass
class Args:
    model: str = "smollm2-135m"  # the embedded model, or a local model directory
    adapter: str = ""  # a starting LoRA adapter (an SFT run's adapter/), or a new one
    iterations: int = 5
    seeds_per_iteration: int = 2  # groups per iteration (one env seed each)
    group_size: int = 4  # episodes per group, each with its own sampling stream
    envs: int = 8  # episodes played at once (one batched engine call per step)
    target_return: float = 500.0
    temperature: float = 0.5
    lr: float = 1e-4
    train_steps: int = 256  # steps per update, drawn uniformly from the iteration's
    heldout_episodes: int = 8
    seed: int = 0
    heldout_seed: int = 2_000_000  # policylm.platform.seeds.TEST_SEED: seeds nothing chose


def parse_args(argv: list[str] | None = None) -> Args:
    """:class:`Args` from the command line (``--iterations 2``...)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return Args(**vars(parser.parse_args(argv)))


def load_learner(args: Args, env: Any) -> tuple[Any, str, str]:
    """The policy's weights under training: the model with a LoRA adapter (the given one,
    trainable, or a new rank-16 one), in fp32 on the CPU; the model's path; the prompt form."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policylm.platform.engines.models import resolve_model
    from policylm.platform.records import read_record
    from policylm.platform.training.learner import EpisodicLearner

    path = resolve_model(args.model)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if args.adapter:
        model = PeftModel.from_pretrained(base, args.adapter, is_trainable=True)
    else:
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    form = read_record(args.adapter or None, path).prompt_form  # as the adapter was trained
    learner = EpisodicLearner(model, AutoTokenizer.from_pretrained(path), env, form,
                              temperature=args.temperature, lr=args.lr, minibatch=64)
    return learner, path, form


def play(runner: Any, plan: list) -> pa.Table:
    """Every episode of ``plan`` (a list of chunks), one chunk's episodes at once."""
    return pa.concat_tables([runner.run(chunk.specs, "example") for chunk in plan])


def se(x: np.ndarray) -> float | None:
    """Standard error of the mean; None for fewer than two values."""
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else None


def main(argv: list[str] | None = None) -> dict:
    """Train, then compare the starting and trained weights on held-out seeds; returns the
    per-iteration rows and the held-out means."""
    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs import make_adapter
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks, plan_groups
    from policylm.platform.training.episodic_grpo import build_batch, subsample

    args = parse_args(argv)
    env = make_adapter("CartPole-v1")
    learner, path, form = load_learner(args, env)
    # one engine of its own (live=...), so weight updates reach no other policy in the process
    uri = (f"hf://{path}?target_return={args.target_return}&temperature={args.temperature}"
           f"&prompt={form}&dtype=fp32&live=example")
    runner = EpisodeRunner(env, args.envs)
    engine = runner.policy(uri).engine
    start_weights = learner.lora_weights()
    rows = []
    for it in range(args.iterations):
        t0 = time.perf_counter()
        engine.set_lora(*learner.lora_weights())  # act with the learner's current weights
        steps = play(runner, plan_groups(uri, f"it{it}", args.seeds_per_iteration,
                                              args.group_size, args.seed + 7919 * it, args.envs))
        # group advantages, prompts rendered as the policy rendered them
        batch = build_batch(steps, env, form, learner.template, args.target_return)
        stats = learner.update(subsample(batch, args.train_steps, args.seed + it))
        returns = tr.episode_table(steps).column("return").to_numpy()
        rows.append({"iteration": it, "mean_return": float(returns.mean()),
                     "steps_trained": stats["rows"], "loss": stats["loss"],
                     "filtered_groups": batch.filtered_groups,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    heldout = plan_chunks([("heldout", uri)], args.heldout_episodes, args.heldout_seed,
                          args.envs, shared_seeds=True)
    returns = {}
    for label, weights in (("start", start_weights), ("trained", learner.lora_weights())):
        engine.set_lora(*weights)
        table = tr.episode_table(play(runner, heldout)).sort_by(tr.EPISODE_ID)
        returns[label] = table.column("return").to_numpy()  # the same seeds, in one order
    means = {k: (float(v.mean()), se(v)) for k, v in returns.items()}
    means["paired_difference"] = (float((returns["trained"] - returns["start"]).mean()),
                                  se(returns["trained"] - returns["start"]))
    print({"heldout (mean, s.e.)": means}, flush=True)
    return {"iterations": rows, "heldout": means, "version": learner.version}


if __name__ == "__main__":
    main()
