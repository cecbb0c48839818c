"""The ``policylm`` command: one subcommand per job, each the same as
``python -m policylm.jobs.<module> --config F key=value ...``.

Nothing heavy is imported until a subcommand runs, so ``policylm --help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (job module, one-line help). The order is the pipeline's.
JOBS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the main job: experts -> collect -> dataset (embedded defaults)"),
    "train-experts": ("train_experts", "train PPO with RLlib, save weak/medium/expert checkpoints"),
    "collect": ("collect", "collect trajectories from policy URIs with rollout actors"),
    "filter": ("filter", "keep the best episodes (achievements, reward, length); --stats-only"),
    "self-improve": ("self_improve", "play -> keep the best -> SFT -> play again -> compare"),
    "build-dataset": ("build_dataset", "return-to-go chat dataset with Ray Data (Parquet, JSONL)"),
    "sft": ("sft", "fine-tune the LLM policy with Ray Train + TRL + PEFT LoRA"),
    "grpo": ("grpo", "improve the LLM policy with GRPO on Ray Train (TRL; rewards: format, bc)"),
    "bc-ppo": ("bc_ppo", "demos -> RLlib BC -> PPO, against PPO from scratch and transfer"),
    "merge": ("merge", "merge a LoRA adapter into its base model (a plain model directory)"),
    "evaluate": ("evaluate", "play a policy at several target returns; metrics, plot, report"),
    "compare": ("compare", "two policies or trajectory sets side by side (pre/post fine-tuning)"),
    "sweep": ("sweep", "Ray Tune sweeps: target returns, or LoRA/lr settings with ASHA"),
    "serve": ("serve", "serve an LLM policy over HTTP with Ray Serve (act, chat completions)"),
    "export-minari": ("export_minari", "write trajectories as a Minari dataset"),
    "import-minari": ("import_minari", "read a local Minari dataset into the trajectory schema"),
}

USAGE = """usage: policylm <command> [--config FILE] [key=value ...]
       policylm <command> --help-config     (every config key with its default and meaning)

Train language models as reinforcement-learning policies on Ray.

commands:
{commands}

Each command is also `python -m policylm.jobs.<module>`; it connects to RAY_ADDRESS when set,
else starts local Ray, and writes one run directory (runs/<command>-<time>/, or out=DIR).
"""


def usage() -> str:
    width = max(map(len, JOBS))
    lines = [f"  {name:{width}s}  {help_}" for name, (_, help_) in JOBS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``policylm`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from policylm import __version__

        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in JOBS:
        print(f"policylm: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"policylm.jobs.{JOBS[name][0]}")
    from policylm.jobs.common import run_job

    run_job(name, module.CONFIG, module.main, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
