"""The ``policylm`` command: one subcommand per job, each the same as
``python -m policylm.jobs.<module> --config F key=value ...``.

Nothing heavy is imported until a subcommand runs, so ``policylm --help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> job module, in the pipeline's order. Each line of the help is the first line of
# the job's config class docstring, read from its source (no import), so it cannot drift.
JOBS: dict[str, str] = {
    "demo": "demo", "train-experts": "train_experts", "collect": "collect", "filter": "filter",
    "self-improve": "self_improve", "build-dataset": "build_dataset", "sft": "sft",
    "grpo": "grpo", "grpo-episodes": "grpo_episodes", "bc-ppo": "bc_ppo", "control": "control",
    "merge": "merge",
    "evaluate": "evaluate",
    "compare": "compare", "benchmark": "benchmark", "train-suite": "train_suite",
    "sweep": "sweep", "serve": "serve",
    "export-minari": "export_minari", "import-minari": "import_minari",
}

USAGE = """usage: policylm <command> [--config FILE] [key=value ...] [--verbose]
       policylm <command> --help-config     (every config key with its default and meaning)

Train language models as reinforcement-learning policies on Ray.

commands:
{commands}

Each command is also `python -m policylm.jobs.<module>`; it connects to RAY_ADDRESS when set,
else starts local Ray, and writes one run directory (runs/<command>-<time>/, or out=DIR).

Policies are URIs: random:, constant:<action>, mix:<uri>?eps=P, file://<checkpoint>,
pytorch://<weights>?class=<module:Class>, rllib://<dir>, python:<module:Class>, hf://<model>,
http://<host:port> (policylm serve), openai://<host:port>/v1?model=<name>
(docs/concepts/policies.md).
URIs that run code are for trusted inputs only: python:<module:Class> and
pytorch://...?class=<module or file.py:Class> import and run that code; rllib://<dir> unpickles
the checkpoint (a pickle can run anything); compare's eval_fn=module:function imports and runs
it. Give them only modules, files and checkpoints you would run yourself.
"""


def job_summary(module: str) -> str:
    """The first line of the docstring of the class a job module's ``CONFIG`` names, read with
    ``ast`` from the module's source (importing every job would load torch and Ray)."""
    import ast
    from pathlib import Path

    source = Path(__file__).parent / "jobs" / f"{module}.py"
    tree = ast.parse(source.read_text())
    config = next((node.value.id for node in tree.body if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", "") == "CONFIG" for t in node.targets)
                   and isinstance(node.value, ast.Name)), None)
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    if config in classes:
        doc = ast.get_docstring(classes[config]) or ""
    else:  # a config class imported from elsewhere: the job module's own docstring
        doc = ast.get_docstring(tree) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def usage() -> str:
    width = max(map(len, JOBS))
    lines = [f"  {name:{width}s}  {job_summary(module)}" for name, module in JOBS.items()]
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
    module = importlib.import_module(f"policylm.jobs.{JOBS[name]}")
    from policylm.jobkit.runs import run_job

    run_job(name, module.CONFIG, module.main, rest, quiet=getattr(module, "QUIET", True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
