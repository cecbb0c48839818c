"""Prompt forms: how (target return, step, observation) becomes the text the model reads, for
training rows and for acting alike (one place, so the two never drift).

- ``chat`` (default): a system turn (env rules and valid actions) and the user turn
  ``Target return: R`` / ``Step: t`` / observation, through the model's chat template; the
  answer is the action text. What an untrained instruction model can follow.
- ``compact``: no chat template and no system text: ``R=<R> t=<t> <observation> ->`` and the
  answer `` <action>``. A CartPole row is about 34 tokens instead of 88, so a training budget
  sees 2.6x the rows; for fine-tuned policies, which learn the format from their data.

``policylm sft`` records the form in the adapter directory (``policylm.json``, read and written
by ``policylm.platform.records``), and an ``hf://`` policy with that adapter (or a model merged
from it) prompts in the same form.

History (``history=k``): the prompt holds the episode's earlier steps as a transcript, each one
rendered exactly as its own prompt was, followed by the action taken (:func:`history_messages`
for ``chat``: earlier user and assistant turns; for ``compact``: one ``R=.. t=.. <obs> ->
<action>`` block per step), in dataset rows (``build-dataset history=k``) and acting prompts
alike. The window (:func:`history_start`) holds at least ``k`` earlier steps and fewer than
``2k``: its start moves ``k`` steps at a time, so between moves every prompt of an episode
extends the one before, and an engine reuses the episode's cached prefix instead of encoding it
again (``score(..., sessions=...)``, the ``hf`` engine). ``k`` is recorded with the dataset and
the adapter, so a policy acts with the history it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from policylm.platform.numbers import format_number
from policylm.platform.records import check_form

PROMPT_TEMPLATE_VERSION = "v2"  # reported by the server with the prompt form (v2: history as
                                # a transcript of earlier steps)


def format_user(target_return: float | None, t: int, obs_text: str) -> str:
    """The user turn of the prompt template: target return (``?`` for none: the null target),
    step index (return-to-go is ambiguous under a time limit without it) and the observation
    text."""
    return f"Target return: {format_target(target_return)}\nStep: {t}\n{obs_text}"


def format_target(target_return: float | None) -> str:
    """The target as a prompt writes it: :func:`format_number`, or ``?`` for the null target
    (no target: what return guidance contrasts the target with)."""
    return "?" if target_return is None else format_number(target_return)


Step = tuple[float, int, str, str]
"""An earlier step as the prompt holds it: (target in its prompt, step, observation text,
action text)."""


def history_start(t: int, k: int) -> int:
    """The first earlier step the prompt at step ``t`` holds with ``history=k`` (``t`` when
    ``k`` is 0): ``max(0, (t // k - 1) * k)``. At least ``k`` steps (all of them before step
    ``k``) and at most ``2k - 1``; the start moves only when ``t`` is a multiple of ``k``."""
    if k <= 0:
        return t
    return max(0, (t // k - 1) * k)


def history_window(past: Sequence[Any], t: int, k: int) -> list[Any]:
    """The earlier steps (each with its step number second: :data:`Step`) the prompt at step
    ``t`` holds with ``history=k``: those from :func:`history_start` up to ``t``, in order."""
    start = history_start(t, k)
    return [p for p in past if start <= p[1] < t]


def prompt_target(target: float, earned: float, adaptive: bool = True) -> float:
    """The target a prompt asks for: the episode's ``target`` less the reward ``earned`` before
    this step when ``adaptive``, else ``target``; rounded to 2 decimals (the text the acting
    policy, the server and the learner all write)."""
    return round(target - (earned if adaptive else 0.0), 2)


def history_messages(system: str, past: Sequence[Step], target_return: float, t: int,
                     obs_text: str) -> list[dict]:
    """The ``chat`` conversation: the system turn, then per earlier step its user turn and the
    action as the assistant's answer, then this step's user turn."""
    msgs = [{"role": "system", "content": system}]
    for r, j, o, a in past:
        msgs += [{"role": "user", "content": format_user(r, j, o)},
                 {"role": "assistant", "content": a}]
    return [*msgs, {"role": "user", "content": format_user(target_return, t, obs_text)}]


def compact_history(past: Sequence[Step]) -> str:
    """The ``compact`` transcript of earlier steps: each step's prompt, its action, a newline."""
    return "".join(f"{compact_prompt(r, j, o)} {a}\n" for r, j, o, a in past)


def compact_prompt(target_return: float | None, t: int, obs_text: str) -> str:
    """``R=500 t=3 x=0.02 v=-0.15 a=0.03 w=0.21 ->`` (the model continues with the action);
    ``R=?`` for the null target."""
    return f"R={format_target(target_return)} t={t} {obs_text} ->"


class ChatTemplate:
    """A model's chat template (its tokenizer's): conversations as the text the model reads,
    ending where the assistant's answer starts. Engines hold one (``engine.template``), and so
    does the GRPO learner, so both render a prompt alike."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def render(self, messages: Sequence[dict]) -> str:
        """A conversation (``[{"role", "content"}]``), ending where the answer starts."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=True)

    def prompt(self, system: str, user: str) -> str:
        """A system and a user turn, ending where the answer starts."""
        return self.render([{"role": "system", "content": system},
                            {"role": "user", "content": user}])

    def prefix(self, system: str) -> str:
        """The text every prompt with this system turn starts with, up to where the user's
        words begin (found by rendering two prompts that differ only in the user text)."""
        a, b = self.prompt(system, "a"), self.prompt(system, "b")
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]


def render_prompt(template: ChatTemplate | None, form: str, system: str,
                  target_return: float | None, t: int, obs_text: str,
                  past: Sequence[Step] = (), lead: str = "") -> str:
    """The full prompt text, ending where the action starts, after the ``past`` steps (the
    history window), in the model's chat ``template`` (the ``compact`` form needs none).
    ``lead``: text every prompt starts with (few-shot examples): in ``compact`` before the
    first step, in ``chat`` after the system text."""
    if check_form(form) == "compact":
        lead = lead + "\n" if lead else ""
        return lead + compact_history(past) + compact_prompt(target_return, t, obs_text)
    if template is None:
        raise ValueError("the chat form renders prompts in a model's chat template: give one")
    return template.render(history_messages(with_lead(system, lead), past, target_return, t,
                                            obs_text))


def with_lead(system: str, lead: str) -> str:
    """The chat form's system text with the few-shot examples after it (unchanged without)."""
    return f"{system}\n\n{lead}" if lead else system


def render_prefix(template: ChatTemplate | None, form: str, system: str, lead: str = ""
                  ) -> str | None:
    """Text every prompt of this form starts with (a KV-cache hint for scoring), or None."""
    if check_form(form) == "chat":
        return template.prefix(with_lead(system, lead)) if template is not None else None
    return lead + "\n" if lead else None


def training_pair(form: str, system: str, target_return: float | None, t: int, obs_text: str,
                  action_text: str, past: Sequence[Step] = (), lead: str = "") -> tuple[Any, Any]:
    """``(prompt, completion)`` for TRL's SFTTrainer, the prompt as :func:`render_prompt`
    renders it (``lead``: the few-shot examples): chat messages for ``chat`` (conversational
    form), plain strings for ``compact`` (the loss is on the completion)."""
    if check_form(form) == "compact":
        return render_prompt(None, form, system, target_return, t, obs_text, past, lead), \
            " " + action_text
    return (history_messages(with_lead(system, lead), past, target_return, t, obs_text),
            [{"role": "assistant", "content": action_text}])


def action_candidates(form: str, actions: list[str]) -> list[str]:
    """The answer texts to score for the valid actions in this form."""
    return [" " + a for a in actions] if check_form(form) == "compact" else list(actions)


# Think-then-act (ReAct-style answers, mode=think): a short reasoning text, then the action on a
# last line "Action: <action>". Acting, SFT rows and GRPO's format reward use these, so they
# agree on the template.
INSTRUCTION = ("Think briefly about the situation (a few short sentences), then give your "
               "action on a last line of its own, exactly as: Action: <action>")
ACTION_MARK = re.compile(r"\baction[ \t]*:[ \t]*([^\n]*)", re.IGNORECASE)


ACTION_ONLY = "Reply with the action only."  # the end of an env's system text (EnvAdapter)


def think_system(system: str) -> str:
    """The system text of a thinking policy: the env's rules without the request for the action
    alone, then :data:`INSTRUCTION`."""
    return f"{system.removesuffix(ACTION_ONLY).rstrip()}\n\n{INSTRUCTION}"


def split_answer(text: str) -> tuple[str, str | None]:
    """``(thought, action text)`` of an answer: the thought is the text before the last
    ``Action:`` marker, the action the rest of its line; the action is None when there is no
    marker, or nothing after it (the budget ran out, or the model ignored the template)."""
    matches = list(ACTION_MARK.finditer(text))
    if not matches:
        return text.strip(), None
    last = matches[-1]
    action = last.group(1).strip()
    return text[:last.start()].strip(), action or None


def answer(thought: str | None, action_text: str) -> str:
    """The completion a row with a thought trains on (the template :func:`split_answer`
    reads; an empty thought: the ``Action:`` line alone); the bare action text without one
    (None)."""
    if thought is None:
        return action_text
    return f"{thought.strip()}\nAction: {action_text}".lstrip()
