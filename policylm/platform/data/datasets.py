"""Return-conditioned dataset transforms over Arrow tables (what Ray Data's ``map_batches`` and
``map_groups`` call), plus episode selection with DuckDB and the train/validation split.

The chat rows written here use the env adapter's prompt template (``system_text`` and
``format_user``), the same one the LLM policy prompts with, so training and acting never drift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policylm.platform.data import trajectories as tr
from policylm.platform.data.returns import scale_returns, segment_returns_to_go
from policylm.platform.prompts import answer, format_user, think_system, training_pair

TARGET_RETURN = "target_return"
SYSTEM = "system"
PROMPT = "prompt"
OBSERVATION = "observation"
COMPLETION = "completion"
MESSAGES = "messages"
HISTORY = "history"
SPLIT = "split"

MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# a row's earlier steps in its prompt (policylm.platform.prompts.Step), oldest first
HISTORY_TYPE = pa.list_(pa.struct([(TARGET_RETURN, pa.float64()), (tr.T, pa.int64()),
                                   (OBSERVATION, pa.string()), ("action", pa.string())]))
CHAT_SCHEMA = pa.schema(
    [
        pa.field(tr.EPISODE_ID, pa.string()),
        pa.field(tr.T, pa.int32()),
        pa.field(tr.SKILL, pa.string()),
        pa.field(tr.EPISODE_RETURN, pa.float64()),
        pa.field(TARGET_RETURN, pa.float64()),
        pa.field(SYSTEM, pa.string()),
        pa.field(PROMPT, pa.string()),
        pa.field(OBSERVATION, pa.string()),
        pa.field(COMPLETION, pa.string()),
        pa.field(tr.ACTION_INDEX, pa.int32()),
        pa.field(MESSAGES, MESSAGE_TYPE),
        pa.field(HISTORY, HISTORY_TYPE),
        tr.ENV_STATE_FIELD,  # null where the env cannot restore its state
    ]
)


class DatasetError(ValueError):
    """A dataset filter or row that cannot be used; the message names it."""


@dataclass
class EpisodeFilter:
    """Which episodes to keep. ``None`` means no bound; ``where`` is a SQL condition over the
    episode table (columns: episode_id, skill, policy_uri, seed, agent_id, length, return,
    terminated, truncated)."""

    min_return: float | None = None
    max_return: float | None = None
    max_length: int | None = None
    skills: list[str] = field(default_factory=list)
    where: str = ""


def select_episodes(episodes: pa.Table, flt: EpisodeFilter) -> pa.Table:
    """The rows of an episode table that pass ``flt`` (DuckDB runs the conditions)."""
    import duckdb

    conds = []
    if flt.min_return is not None:
        conds.append(f"return >= {float(flt.min_return)!r}")
    if flt.max_return is not None:
        conds.append(f"return <= {float(flt.max_return)!r}")
    if flt.max_length is not None:
        conds.append(f"length <= {int(flt.max_length)}")
    if flt.skills:
        conds.append("skill IN (" + ", ".join("'" + s.replace("'", "''") + "'"
                                               for s in flt.skills) + ")")
    if flt.where.strip():
        conds.append(f"({flt.where})")
    sql = "SELECT * FROM episodes" + (" WHERE " + " AND ".join(conds) if conds else "")
    con = duckdb.connect()
    try:
        con.register("episodes", episodes)
        return con.sql(sql + " ORDER BY episode_id, agent_id").to_arrow_table()
    except duckdb.Error as err:
        raise DatasetError(
            f"episode filter failed: {err}; the where clause is SQL over the columns "
            f"{episodes.schema.names}, e.g. where=\"return > 100 AND skill != 'weak'\""
        ) from err
    finally:
        con.close()


def split_of(episode_id: str, validation_fraction: float) -> str:
    """``"validation"`` for a stable pseudo-random share of episodes, else ``"train"``.

    A hash of the id decides, so every step of an episode lands in the same split (no leakage)
    and the split does not depend on order or sharding. The agents of one multi-agent episode
    (``<id>-aNN``) share its split: they played one arena, so validation arenas are never seen
    in training."""
    key = tr.arena_episode_id(episode_id)
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2.0**64
    return "validation" if h < validation_fraction else "train"


def step_bucket(t: int) -> int:
    """Step bucket of doubling width: steps 0-7 -> 0, 8-15 -> 1, 16-31 -> 2, 32-63 -> 3, ..."""
    return max(0, int(t).bit_length() - 3)


def _bucket_steps(length: int) -> dict[int, int]:
    """How many of an episode's steps ``0..length-1`` fall in each step bucket."""
    out, b = {}, 0
    while True:
        lo, hi = (0, 8) if b == 0 else (2 ** (b + 2), 2 ** (b + 3))
        if lo >= length:
            return out
        out[b] = min(length, hi) - lo
        b += 1


def water_level(counts: Sequence[int], budget: float) -> float:
    """The cap ``c`` with ``sum(min(n, c)) == budget`` (every count when they sum to less)."""
    rest, left = sorted(counts), float(budget)
    for i, n in enumerate(rest):
        share = left / (len(rest) - i)
        if n >= share:
            return share
        left -= n
    return float(rest[-1]) if rest else 0.0


BALANCES = ("skill", "step", "action")


def action_counts(steps: pa.Table, split: dict[str, str]) -> dict[str, int]:
    """Training rows per ``skill/action index`` (``steps``: episode id, skill and action index
    columns of the trajectories; ``split`` maps episode id to its split)."""
    counts: dict[str, int] = {}
    for e, s, a in zip(steps.column(tr.EPISODE_ID).to_pylist(),
                       steps.column(tr.SKILL).to_pylist(),
                       steps.column(tr.ACTION_INDEX).to_pylist(), strict=True):
        if split.get(e) == "train":
            if a is None or a < 0:
                raise DatasetError("balance=action needs discrete actions (an action index per "
                                   f"step); episode {e} has none: use balance=skill or step")
            counts[f"{s}/{a}"] = counts.get(f"{s}/{a}", 0) + 1
    return counts


def row_fractions(episodes: pa.Table, split: dict[str, str], cap: int,
                  balance: str = "skill", actions: dict[str, int] | None = None
                  ) -> dict[str, float]:
    """Shares of training rows to keep (see :func:`sample_rows`) so that about ``cap`` rows per
    skill remain. ``episodes`` is the episode table, ``split`` maps episode id to its split.

    ``balance="skill"``: per skill, ``min(1, cap / its training steps)``; keys are skills.
    ``balance="step"``: the same total, spread so that within each step bucket every skill
    present keeps the same number of rows (as far as it has them): keys are ``skill/bucket``.
    Early steps then hold as many rows of the expert as of the weak policies, and the target
    return is the only thing in a prompt that tells them apart; under uniform sampling an
    expert's first steps are a few percent of its rows and the weak policies dominate them.
    ``balance="action"``: per skill, every action keeps as many of its rows as it can, up to
    one level, ``cap`` rows in all (``actions``: :func:`action_counts`); keys are
    ``skill/action index``. A demonstrator's rare decisive actions (Crafter's bot makes a
    pickaxe once in 1,300 steps) are then all kept, where uniform sampling keeps a handful.
    """
    if balance not in BALANCES:
        raise DatasetError(f"balance {balance!r} is unknown; use {', '.join(BALANCES)}")
    if balance == "action":
        if actions is None:
            raise DatasetError("balance=action needs the training rows' action counts")
        out: dict[str, float] = {}
        for skill in {k.rsplit("/", 1)[0] for k in actions}:
            mine = {k: n for k, n in actions.items() if k.rsplit("/", 1)[0] == skill}
            level = water_level(list(mine.values()), cap)
            out.update({k: min(1.0, level / n) for k, n in mine.items()})
        return out
    counts: dict[str, int] = {}
    skills = set()
    for e, s, n in zip(episodes.column(tr.EPISODE_ID).to_pylist(),
                       episodes.column(tr.SKILL).to_pylist(),
                       episodes.column("length").to_pylist(), strict=True):
        if split.get(e) != "train":
            continue
        skills.add(s)
        parts = {s: int(n)} if balance == "skill" else {
            f"{s}/{b}": k for b, k in _bucket_steps(int(n)).items()}
        for key, k in parts.items():
            counts[key] = counts.get(key, 0) + k
    if balance == "skill":
        return {k: min(1.0, cap / n) for k, n in counts.items()}
    level = water_level(list(counts.values()), cap * len(skills))
    return {k: min(1.0, level / n) for k, n in counts.items()}


def row_draw(episode_id: str, t: int) -> float:
    """A stable pseudo-random number in [0, 1) per (episode, step): row sampling that does not
    depend on order or sharding."""
    h = hashlib.sha256(f"{episode_id}/{t}".encode()).digest()[:8]
    return int.from_bytes(h, "little") / 2.0**64


def sample_rows(batch: pa.Table, fractions: dict[str, float], balance: str = "skill"
                ) -> pa.Table:
    """Keep each row with its share from :func:`row_fractions` made with the same ``balance``:
    keyed by skill, ``skill/step bucket`` or ``skill/action index``; rows with no share are
    kept."""
    keys = {"skill": lambda s, t, a: s, "step": lambda s, t, a: f"{s}/{step_bucket(t)}",
            "action": lambda s, t, a: f"{s}/{a}"}[balance]
    keep = [row_draw(e, t) < fractions.get(keys(s, t, a), 1.0)
            for e, t, s, a in zip(batch.column(tr.EPISODE_ID).to_pylist(),
                                  batch.column(tr.T).to_pylist(),
                                  batch.column(tr.SKILL).to_pylist(),
                                  batch.column(tr.ACTION_INDEX).to_pylist(), strict=True)]
    return batch.filter(pa.array(keep, pa.bool_()))


def keep_rows(batch: pa.Table, episode_ids: Iterable[str]) -> pa.Table:
    """Rows whose episode id is in ``episode_ids``."""
    ids = pa.array(sorted(set(episode_ids)), pa.string())
    return batch.filter(pc.is_in(batch.column(tr.EPISODE_ID), value_set=ids))


def add_rtg(batch: pa.Table, gamma: float = 1.0, scale: float = 1.0) -> pa.Table:
    """Recompute ``rtg`` (whole episodes must be in ``batch``) with ``gamma``, divided by
    ``scale``; truncated episodes get the observed return (no bootstrap)."""
    rtg = segment_returns_to_go(
        batch.column(tr.REWARD).to_numpy(),
        batch.column(tr.EPISODE_ID).to_numpy(zero_copy_only=False),
        batch.column(tr.T).to_numpy(),
        batch.column(tr.TERMINATED).to_numpy(zero_copy_only=False),
        gamma,
    )
    idx = batch.schema.get_field_index(tr.RTG)
    return batch.set_column(idx, tr.RTG, pa.array(scale_returns(rtg, scale), pa.float64()))


# what each row's prompt gives as its target: the return that followed the step (return to go,
# what return-conditioned training learns from), or the target the policy acted for when it
# played the step (rejection-sampling fine-tuning: the kept steps train under the prompts they
# were played with)
TARGETS = ("return_to_go", "played")


def check_played_targets(batch: pa.Table) -> None:
    """:class:`DatasetError` unless every step has the target it was played for (its policy
    took one: a return-conditioned LLM policy)."""
    if tr.TARGET_RETURN not in batch.column_names or batch.column(tr.TARGET_RETURN).null_count:
        raise DatasetError("target=played needs the target each step was played for, and "
                           "these steps' policy took none (not a return-conditioned LLM "
                           "policy); use target=return_to_go")


def played_targets(batch: pa.Table) -> pa.Table:
    """Set ``rtg`` to the target each step was played for (``target_return``, as its prompt
    wrote it); :func:`check_played_targets` first."""
    check_played_targets(batch)
    idx = batch.schema.get_field_index(tr.RTG)
    return batch.set_column(idx, tr.RTG, batch.column(tr.TARGET_RETURN).cast(pa.float64()))


def add_history(batch: pa.Table, history: int) -> pa.Table:
    """A ``history`` column: each row's earlier steps in the window
    (:func:`policylm.platform.prompts.history_start`), each with the target its own row has
    (the return-to-go), its step, observation text and action text, so its prompt is rendered
    as the LLM policy renders it when acting. Whole episodes must be in ``batch``; with
    ``history`` 0 every list is empty."""
    from policylm.platform.prompts import history_start

    eps = batch.column(tr.EPISODE_ID).to_pylist()
    steps = batch.column(tr.T).to_pylist()
    rtg = batch.column(tr.RTG).to_pylist()
    obs = batch.column(tr.OBS_TEXT).to_pylist()
    acts = batch.column(tr.ACTION_TEXT).to_pylist()
    order = sorted(range(batch.num_rows), key=lambda i: (eps[i], steps[i]))
    past: list[list[dict]] = [[] for _ in range(batch.num_rows)]
    for pos, i in enumerate(order):
        start, first = history_start(steps[i], history), pos
        while first > 0 and eps[order[first - 1]] == eps[i] and steps[order[first - 1]] >= start:
            first -= 1
        past[i] = [{TARGET_RETURN: rtg[j], tr.T: steps[j], OBSERVATION: obs[j], "action": acts[j]}
                   for j in order[first:pos]]
    return batch.append_column(pa.field(HISTORY, HISTORY_TYPE), pa.array(past, HISTORY_TYPE))


def steps_of(history: list[dict] | None) -> list[tuple[float, int, str, str]]:
    """A ``history`` cell as the prompt renderers take it (``policylm.platform.prompts.Step``)."""
    return [(h[TARGET_RETURN], h[tr.T], h[OBSERVATION], h["action"]) for h in history or []]


def episode_rows(batch: pa.Table, gamma: float = 1.0, scale: float = 1.0,
                 history: int = 0, target: str = "return_to_go") -> pa.Table:
    """What build-dataset does per episode group: :func:`add_rtg` (``target=played``:
    :func:`played_targets`), then :func:`add_history`."""
    if target not in TARGETS:
        raise DatasetError(f"target {target!r} is unknown; use {', '.join(TARGETS)}")
    rows = played_targets(batch) if target == "played" else add_rtg(batch, gamma, scale)
    return add_history(rows, history)


def to_chat_rows(batch: pa.Table, system: str) -> pa.Table:
    """Trajectory rows -> chat rows: system / user (target return, step, obs text) /
    assistant (action text; a step with a ``thought`` column value: the thinking policy's system
    text and the thought, then ``Action: <action>``), after the earlier steps' turns where
    ``batch`` has ``history``.
    ``target_return`` is the row's (scaled) return-to-go; the observation text has its own
    column, so other prompt forms (``policylm.platform.prompts``) can be rendered from the same
    rows."""
    n = batch.num_rows
    rtg = batch.column(tr.RTG).to_pylist()
    steps = batch.column(tr.T).to_pylist()
    obs_text = batch.column(tr.OBS_TEXT).to_pylist()
    act_text = batch.column(tr.ACTION_TEXT).to_pylist()
    past = batch.column(HISTORY).to_pylist() if HISTORY in batch.schema.names else [[]] * n
    thoughts = batch.column(tr.THOUGHT).to_pylist() if tr.THOUGHT in batch.schema.names \
        else [None] * n
    # a step played with a thought (mode=think) trains on the thinking policy's prompt and on
    # its whole answer, the thought then "Action: <action>"
    systems = [system if th is None else think_system(system) for th in thoughts]
    completions = [answer(th, a) for th, a in zip(thoughts, act_text, strict=True)]
    prompts = [format_user(r, t, o) for r, t, o in zip(rtg, steps, obs_text, strict=True)]
    pairs = [training_pair("chat", sy, r, t, o, c, steps_of(h))
             for sy, r, t, o, c, h in zip(systems, rtg, steps, obs_text, completions, past,
                                          strict=True)]
    messages = [prompt + completion for prompt, completion in pairs]
    return pa.table(
        {
            tr.EPISODE_ID: batch.column(tr.EPISODE_ID),
            tr.T: batch.column(tr.T),
            tr.SKILL: batch.column(tr.SKILL),
            tr.EPISODE_RETURN: batch.column(tr.EPISODE_RETURN),
            TARGET_RETURN: pa.array(rtg, pa.float64()),
            SYSTEM: pa.array(systems, pa.string()),
            PROMPT: pa.array(prompts, pa.string()),
            OBSERVATION: pa.array(obs_text, pa.string()),
            COMPLETION: pa.array(completions, pa.string()),
            tr.ACTION_INDEX: batch.column(tr.ACTION_INDEX),
            MESSAGES: pa.array(messages, MESSAGE_TYPE),
            HISTORY: pa.array(past, HISTORY_TYPE),
            tr.ENV_STATE: batch.column(tr.ENV_STATE) if tr.ENV_STATE in batch.schema.names
            else pa.nulls(n, tr.ENV_STATE_FIELD.type),
        },
        schema=CHAT_SCHEMA,
    )


def write_chat_jsonl(rows: pa.Table, path: str | Path) -> int:
    """Write ``{"messages": [...]}`` per line (the common chat fine-tuning format); returns the
    number of lines. Written to a temp file and renamed."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for msgs in rows.column(MESSAGES).to_pylist():
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return rows.num_rows


def read_chat_jsonl(path: str | Path) -> list[list[dict]]:
    """Read a chat JSONL file back; errors name the file, line and what is wrong."""
    out = []
    with Path(path).open() as f:
        for i, line in enumerate(f, start=1):
            try:
                msgs = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DatasetError(f"{path}: line {i} is not {{\"messages\": [...]}} ({err})") \
                    from err
            for j, m in enumerate(msgs):
                if not isinstance(m, dict) or not {"role", "content"} <= set(m):
                    raise DatasetError(f"{path}: line {i}, message {j} needs role and content")
            out.append(msgs)
    return out


def rows_per_skill(rows: pa.Table) -> dict[str, int]:
    """Row count per skill label."""
    skills, counts = np.unique(np.asarray(rows.column(tr.SKILL).to_pylist(), dtype=object),
                               return_counts=True)
    return {str(s): int(c) for s, c in zip(skills, counts, strict=True)}


def episode_ids(episodes: pa.Table) -> Sequence[str]:
    return episodes.column(tr.EPISODE_ID).to_pylist()
