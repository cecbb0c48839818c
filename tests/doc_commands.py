"""The commands of the README and the docs site, read from their fenced code blocks.

Two uses: ``tests/unit/test_docs.py`` parses every ``policylm`` command against its job's
config (keys, values, config files), fast, in ``make test``; ``make test-docs`` runs every
block marked ``<!-- runnable -->`` for real, in a fresh copy of the repository
(``python tests/doc_commands.py run``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    """One fenced code block: its file, first line number, language and text."""

    path: Path
    line: int
    lang: str
    text: str
    runnable: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    """The README and every page of the docs site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file; a block right after ``<!-- runnable -->`` is
    marked runnable."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i].strip())
        if match is None:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1)
                         if lines[j].strip()), "")
        blocks.append(Block(path, start + 1, match.group(1) or "text", "\n".join(body),
                            previous == RUNNABLE))
        i += 1
    return blocks


def shell_commands(text: str) -> list[str]:
    """The simple commands of a shell block: continuation lines joined, comments dropped, split
    at ``&&``, ``;``, ``|`` and a trailing ``&``."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True, posix=True)
        except ValueError as err:
            raise ValueError(f"cannot split {line!r}: {err}") from err
        current: list[str] = []
        for word in words:
            if word in ("&&", ";", "|", "&", "||"):
                if current:
                    commands.append(shlex.join(current))
                current = []
            else:
                current.append(word.rstrip(";&") if word.endswith((";", "&")) else word)
        if current:
            commands.append(shlex.join(current))
    return commands


def policylm_invocation(command: str) -> tuple[str, list[str]] | None:
    """``(job name, arguments)`` when a command runs a policylm job (``policylm <job>`` or
    ``python -m policylm.jobs.<module>``, after any ``VAR=value`` prefixes), else None."""
    from policylm.cli import JOBS

    words = shlex.split(command)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    if len(words) >= 2 and words[0].endswith("policylm") and not words[1].startswith("-"):
        return words[1], words[2:]
    if len(words) >= 3 and words[1] == "-m" and words[2].startswith("policylm.jobs."):
        module = words[2].removeprefix("policylm.jobs.")
        names = [name for name, mod in JOBS.items() if mod == module]
        return (names[0] if names else f"<module {module}>"), words[3:]
    return None


def check_invocation(job: str, args: list[str]) -> None:
    """Parse a job's arguments as ``policylm`` would, without running it: the job exists, every
    key is a config key, every value has its type, the config file exists. A ``--config`` under
    ``runs/`` is written by an earlier command, so only the overrides are checked then."""
    import importlib

    from policylm.cli import JOBS
    from policylm.jobkit.runs import flag_overrides
    from policylm.platform.config import load_config

    if job not in JOBS:
        raise ValueError(f"unknown command {job!r} (known: {', '.join(JOBS)})")
    config_cls = importlib.import_module(f"policylm.jobs.{JOBS[job]}").CONFIG
    argv = flag_overrides(args)
    if "--help-config" in argv or "--help" in argv:
        return
    config, overrides = None, []
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            config = argv[i + 1]
            i += 2
            continue
        if argv[i] != "--verbose":
            if "=" not in argv[i]:
                raise ValueError(f"argument {argv[i]!r} is not key=value")
            overrides.append(argv[i])
        i += 1
    if config is not None and config.startswith("runs/"):
        config = None
    load_config(config_cls, None if config is None else ROOT / config, overrides)


def all_invocations() -> list[tuple[str, str, str, list[str]]]:
    """``(where, command, job, args)`` for every policylm job in a bash block of the docs."""
    found = []
    for path in doc_files():
        for block in code_blocks(path):
            if block.lang not in ("bash", "sh", "console"):
                continue
            for command in shell_commands(block.text):
                invocation = policylm_invocation(command)
                if invocation is not None:
                    found.append((block.where, command, *invocation))
    return found


def fresh_copy() -> Path:
    """A temporary directory holding the repository's tracked files, the project's ``.venv``
    linked in: what a user has after cloning and ``make setup``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    work = Path(tempfile.mkdtemp(prefix="policylm-docs-"))
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    (work / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return work


def run_blocks(python: str, keep: bool = False) -> int:
    """Run every runnable block, each in its own fresh copy of the repository (a page's commands
    assume a fresh clone, not the outputs of another page) and its own process group, killed at
    its end. Returns the number of failed blocks."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    failed = 0
    blocks = [b for p in doc_files() for b in code_blocks(p) if b.runnable]
    for n, block in enumerate(blocks, 1):
        print(f"\n=== [{n}/{len(blocks)}] {block.where} ({block.lang}) ===", flush=True)
        if block.lang in ("bash", "sh"):
            argv = ["bash", "-euo", "pipefail", "-c", block.text]
        elif block.lang == "python":
            argv = [python, "-c", block.text]
        else:
            raise ValueError(f"{block.where}: runnable blocks are bash or python, not "
                             f"{block.lang!r}")
        work = fresh_copy()
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=work, env=env, start_new_session=True)
        rc = proc.wait()
        with contextlib.suppress(ProcessLookupError):  # what the block left running (a `&`)
            os.killpg(proc.pid, signal.SIGKILL)
        took = time.monotonic() - start
        print(f"=== {block.where}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} "
              f"in {took:.0f} s ===", flush=True)
        failed += rc != 0
        if keep:
            print(f"outputs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return failed


if __name__ == "__main__":
    if sys.argv[1:2] != ["run"]:
        sys.exit("usage: python tests/doc_commands.py run [--keep]")
    failures = run_blocks(sys.executable, keep="--keep" in sys.argv)
    print(f"\n{failures} runnable block(s) failed" if failures else "\nall runnable blocks ran")
    sys.exit(1 if failures else 0)
