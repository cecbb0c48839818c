"""Every command in the README and the docs parses as written (keys, values, config files);
``make test-docs`` runs the blocks marked runnable for real."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from doc_commands import (
    ROOT,
    all_invocations,
    check_invocation,
    code_blocks,
    doc_files,
    policylm_invocation,
    shell_commands,
)

INVOCATIONS = all_invocations()


def test_the_docs_name_every_job():
    from policylm.cli import JOBS

    named = {job for _, _, job, _ in INVOCATIONS}
    assert set(JOBS) <= named, f"jobs no doc command shows: {sorted(set(JOBS) - named)}"


@pytest.mark.parametrize("where,command,job,args", INVOCATIONS,
                         ids=[f"{w}:{j}" for w, _, j, _ in INVOCATIONS])
def test_doc_command_parses(where, command, job, args):
    check_invocation(job, args)


def test_a_bad_key_in_a_command_is_caught():
    from policylm.platform.config import ConfigError

    with pytest.raises(ConfigError, match="episodes_per_polcy"):
        check_invocation("collect", ["episodes_per_polcy=4"])
    with pytest.raises(ValueError, match="unknown command"):
        check_invocation("colect", [])


def test_shell_commands_split_like_the_shell():
    text = ("MINARI_DATASETS_PATH=runs/m policylm export-minari a=1 \\\n    b=2  # note\n"
            "policylm serve policy=\"hf://x?a=1&b=2\" &\nkill %1")
    commands = shell_commands(text)
    assert commands == ["MINARI_DATASETS_PATH=runs/m policylm export-minari a=1 b=2",
                        "policylm serve 'policy=hf://x?a=1&b=2'", "kill %1"]
    assert policylm_invocation(commands[0]) == ("export-minari", ["a=1", "b=2"])
    assert policylm_invocation("python -m policylm.jobs.build_dataset --config c.yaml") == (
        "build-dataset", ["--config", "c.yaml"])
    assert policylm_invocation("kill %1") is None


def test_make_targets_and_files_named_in_the_docs_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for path in doc_files():
        text = path.read_text()
        for target in re.findall(r"`make ([a-z-]+)`|^make ([a-z-]+)", text, re.M):
            name = target[0] or target[1]
            assert name in targets, f"{path.name} names `make {name}`, not in the Makefile"
        for ref in re.findall(r"((?:configs|bench)/[\w./-]+\.(?:yaml|py|sh))", text):
            assert (ROOT / ref).is_file(), f"{path.name} names {ref}, which does not exist"


def test_runnable_blocks_exist_and_are_bash_or_python():
    runnable = [b for p in doc_files() for b in code_blocks(p) if b.runnable]
    assert any(b.path.name == "README.md" for b in runnable), "the README's quickstart"
    assert {b.lang for b in runnable} <= {"bash", "python"}
