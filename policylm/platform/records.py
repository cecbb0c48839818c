"""The prompt record: how a model, adapter or dataset directory prompts (its ``policylm.json``),
with one writer and one reader, and the prompt forms it names. Jobs read and write records; the
prompts themselves are rendered in ``policylm.platform.prompts`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMS = ("chat", "compact")
HISTORY_FORMAT = "transcript"  # recorded with history > 0; earlier records used other text
FORM_FILE = "policylm.json"


class PromptFormError(ValueError):
    """An unknown prompt form or an unreadable form record."""


def check_form(form: str) -> str:
    if form not in FORMS:
        raise PromptFormError(f"prompt form {form!r} is unknown; use one of {', '.join(FORMS)}")
    return form


@dataclass(frozen=True)
class PromptRecord:
    """How a model, adapter or dataset directory prompts: its ``policylm.json``, written by the
    job that made it (sft, grpo, merge, build-dataset) and read by everything that prompts it.

    ``form``: the prompt form (None in a dataset's record, which fixes only its history; reads
    as ``chat``, as for base models); ``history``: the steps of history its rows hold
    (``policylm.platform.prompts.history_start``); ``lead``: the few-shot examples' text every
    prompt starts with; ``think``: its rows thought before acting (``mode=think``);
    ``text_options``: the env options that shaped its rows' text (``EnvAdapter.text_options``
    of the env they were played in; None where unknown: a base model, rows from elsewhere)."""

    form: str | None = None
    history: int = 0
    lead: str = ""
    think: bool = False
    text_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.form is not None:
            check_form(self.form)
        if int(self.history) < 0:
            raise PromptFormError(f"history={self.history}: must be >= 0")

    @property
    def prompt_form(self) -> str:
        """The form to prompt in: the recorded one, else ``chat``."""
        return self.form or "chat"

    @property
    def mode(self) -> str:
        """``think`` for a policy trained to think before acting, else empty."""
        return "think" if self.think else ""

    def to_json(self) -> dict[str, Any]:
        """The record as ``policylm.json`` stores it."""
        return {**({"prompt_form": self.form} if self.form else {}), "history": int(self.history),
                **({"history_format": HISTORY_FORMAT} if self.history else {}),
                **({"lead": self.lead} if self.lead else {}),
                **({"mode": "think"} if self.think else {}),
                **({"text_options": self.text_options} if self.text_options is not None
                   else {})}

    @classmethod
    def from_json(cls, data: Any, where: str = FORM_FILE) -> PromptRecord:
        """The record stored as ``data``; :class:`PromptFormError` naming ``where`` when it is not
        one, or holds history in the format before the transcript (its rows hold other text)."""
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            history = int(data.get("history", 0))
            text_options = data.get("text_options")
            if text_options is not None and not isinstance(text_options, dict):
                raise TypeError(f"text_options is {text_options!r}, not an object")
            record = cls(form=data.get("prompt_form"), history=history,
                         lead=str(data.get("lead", "")), think=data.get("mode") == "think",
                         text_options=text_options)
        except (ValueError, TypeError) as err:
            raise PromptFormError(
                f"{where}: not a prompt record ({err}); expected e.g. "
                '{"prompt_form": "compact", "history": 0}') from err
        if history and data.get("history_format") != HISTORY_FORMAT:
            raise PromptFormError(
                f"{where}: history={history} was recorded in an earlier format (earlier steps "
                "as lines before the observation), which prompts no longer use; rebuild the "
                "dataset (build-dataset history=k) and train again")
        return record


def adapter_record(form: str, data: str | Path, lead: str = "", think: bool = False
                   ) -> PromptRecord:
    """The record of an adapter trained in ``form`` on the dataset ``data``: the history and
    the env text options of the dataset's rows, with ``lead`` and ``think``."""
    rows = read_record(data)
    return PromptRecord(form, rows.history, lead, think, rows.text_options)


def check_text_options(recorded: dict[str, Any] | None, current: dict[str, Any],
                       env_id: str) -> None:
    """Raise :class:`PromptFormError` when an option the record names shapes ``env_id``'s text
    differently here (``current``: the env adapter's ``text_options``): the policy was trained
    on other text. Options only one side names are not compared (None: nothing recorded)."""
    differ = {k: (v, current[k]) for k, v in (recorded or {}).items()
              if k in current and current[k] != v}
    if differ:
        named = ", ".join(f"{k}={was!r} (here {now!r})" for k, (was, now) in differ.items())
        wanted = ", ".join(f"{k}: {json.dumps(was)}" for k, (was, _) in differ.items())
        raise PromptFormError(
            f"{env_id}: the policy was trained on text made with {named}; play it in the same "
            f"env: env_options={{{wanted}}}")


def write_record(directory: str | Path, record: PromptRecord) -> None:
    """Store ``record`` as ``directory``'s ``policylm.json``."""
    Path(directory, FORM_FILE).write_text(json.dumps(record.to_json()) + "\n")


def read_record(*directories: str | Path | None) -> PromptRecord:
    """The record of the first of ``directories`` that has one (an adapter, then its model;
    empty entries skipped), or the empty record (chat, no history) when none does."""
    for d in directories:
        path = Path(d) / FORM_FILE if d else None
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
            except ValueError as err:
                raise PromptFormError(f"{path}: unreadable record ({err})") from err
            return PromptRecord.from_json(data, str(path))
    return PromptRecord()
