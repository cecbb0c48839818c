"""MkDocs hook: ``<!-- config-keys -->`` in a page becomes one section per job with the table of
its config keys (default and meaning), read from the config classes, so it cannot drift."""

from __future__ import annotations

import importlib
from typing import Any

MARKER = "<!-- config-keys -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_keys_markdown() -> str:
    """One section per ``policylm`` command: its summary and every key of its config."""
    from policylm.cli import JOBS
    from policylm.platform.config import describe_config

    parts = []
    for name, module in JOBS.items():
        cls = importlib.import_module(f"policylm.jobs.{module}").CONFIG
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        rows = "\n".join(f"| `{key}` | `{_cell(default)}` | {_cell(doc)} |"
                         for key, default, doc in describe_config(cls))
        parts.append(f"## `policylm {name}`\n\n{summary}\n\n"
                     f"`python -m policylm.jobs.{module}`; in Python "
                     f"`policylm.jobs.{module}.run({cls.__name__}(...))`.\n\n"
                     f"| key | default | meaning |\n|---|---|---|\n{rows}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, config_keys_markdown())
    return markdown
