"""The trajectory schema (one row per step), atomic episode files and the episode table.

Every part that touches trajectories (collector, dataset builder, trainers, RLlib reader,
evaluator) uses these column constants and :func:`trajectory_schema`. Episodes are written whole,
one Parquet file per batch of episodes, to a temp file that is then renamed, so readers never see
half a file and a retried writer replaces its own file instead of adding a duplicate.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

RUN_ID = "run_id"
EPISODE_ID = "episode_id"
ENV_ID = "env_id"
POLICY_URI = "policy_uri"
SKILL = "skill"
SEED = "seed"
AGENT_ID = "agent_id"
T = "t"
OBS = "obs"
OBS_TEXT = "obs_text"
OBS_JSON = "obs_json"
ACTION = "action"
ACTION_INDEX = "action_index"
ACTION_TEXT = "action_text"
REWARD = "reward"
RTG = "rtg"
TERMINATED = "terminated"
TRUNCATED = "truncated"
EPISODE_RETURN = "episode_return"
EPISODE_LENGTH = "episode_length"
FINAL_OBS = "final_obs"  # the observation after the last step; set on an episode's last row only
# optional: the simulator state before the step's action, for envs whose adapter can save and
# restore it (env-grounded GRPO rewards restore it to try other actions)
ENV_STATE = "env_state"
ENV_STATE_FIELD = pa.field(ENV_STATE, pa.list_(pa.float64()), nullable=True)
# optional: the version of the policy weights an episode was played with (online training
# stamps every rollout; null when the policy's weights are fixed)
POLICY_VERSION = "policy_version"
POLICY_VERSION_FIELD = pa.field(POLICY_VERSION, pa.int64(), nullable=True)
# optional: the reasoning a thinking policy wrote before the step's action (mode=think); null
# for policies that act without one
THOUGHT = "thought"
THOUGHT_FIELD = pa.field(THOUGHT, pa.string(), nullable=True)
# optional: the target return a return-conditioned policy acted for at the step (its remaining
# target, with adaptive targeting); null for policies without one
TARGET_RETURN = "target_return"
TARGET_RETURN_FIELD = pa.field(TARGET_RETURN, pa.float64(), nullable=True)
# the schema metadata key of the env text options a file's rows were played with (JSON)
TEXT_OPTIONS_KEY = "policylm.text_options"

BASE_FIELDS = [
    pa.field(RUN_ID, pa.string(), nullable=False),
    pa.field(EPISODE_ID, pa.string(), nullable=False),
    pa.field(ENV_ID, pa.string(), nullable=False),
    pa.field(POLICY_URI, pa.string(), nullable=False),
    pa.field(SKILL, pa.string(), nullable=False),
    pa.field(SEED, pa.int64(), nullable=False),
    pa.field(AGENT_ID, pa.int32(), nullable=False),
    pa.field(T, pa.int32(), nullable=False),
    pa.field(OBS, pa.list_(pa.float32()), nullable=False),
    pa.field(OBS_TEXT, pa.string(), nullable=False),
    pa.field(OBS_JSON, pa.string(), nullable=False),
    pa.field(ACTION, pa.list_(pa.float32()), nullable=False),
    pa.field(ACTION_INDEX, pa.int32(), nullable=False),
    pa.field(ACTION_TEXT, pa.string(), nullable=False),
    pa.field(REWARD, pa.float64(), nullable=False),
    pa.field(RTG, pa.float64(), nullable=False),
    pa.field(TERMINATED, pa.bool_(), nullable=False),
    pa.field(TRUNCATED, pa.bool_(), nullable=False),
    pa.field(EPISODE_RETURN, pa.float64(), nullable=False),
    pa.field(EPISODE_LENGTH, pa.int32(), nullable=False),
    pa.field(FINAL_OBS, pa.list_(pa.float32()), nullable=True),
]
REQUIRED_COLUMNS = [f.name for f in BASE_FIELDS]

EPISODE_TABLE_SCHEMA = pa.schema(
    [
        pa.field(RUN_ID, pa.string()),
        pa.field(EPISODE_ID, pa.string()),
        pa.field(ENV_ID, pa.string()),
        pa.field(POLICY_URI, pa.string()),
        pa.field(SKILL, pa.string()),
        pa.field(SEED, pa.int64()),
        pa.field(AGENT_ID, pa.int32()),
        pa.field("length", pa.int32()),
        pa.field("return", pa.float64()),
        pa.field(TERMINATED, pa.bool_()),
        pa.field(TRUNCATED, pa.bool_()),
    ]
)


def agent_episode_id(episode_id: str, agent: int) -> str:
    """The episode id of one agent's steps in a multi-agent episode."""
    return f"{episode_id}-a{agent:02d}"


def arena_episode_id(agent_episode: str) -> str:
    """The multi-agent episode an agent's episode id belongs to (inverse of
    :func:`agent_episode_id`)."""
    head, sep, tail = agent_episode.rpartition("-a")
    return head if sep and tail.isdigit() else agent_episode


def env_fields(adapter: Any) -> list[pa.Field]:
    """An env adapter's own trajectory columns: its extras (e.g. achievements), and
    ``env_state`` when it can save and restore its state."""
    return [*adapter.extra_fields, *([ENV_STATE_FIELD] if adapter.save_state else [])]


class TrajectoryError(ValueError):
    """A trajectory file or row does not match the schema; the message names file/row/field."""


def trajectory_schema(extra_fields: Sequence[pa.Field] = (),
                      text_options: dict | None = None) -> pa.Schema:
    """The base schema plus an env's own typed columns (e.g. achievements); ``text_options``
    (the env adapter's) go into the schema's metadata, so the files say how their text was
    made (see :func:`text_options_of`)."""
    names = {f.name for f in BASE_FIELDS}
    clash = [f.name for f in extra_fields if f.name in names]
    if clash:
        raise ValueError(f"extra trajectory columns {clash} clash with base columns")
    schema = pa.schema(BASE_FIELDS + list(extra_fields))
    if text_options is None:
        return schema
    return schema.with_metadata({TEXT_OPTIONS_KEY: json.dumps(text_options, sort_keys=True)})


def text_options_of(path: str | Path) -> dict | None:
    """The env text options the trajectory files under ``path`` were played with (their
    schema's metadata), or None when none records them (imported rows, older files). Files
    played with different options raise a :class:`TrajectoryError`: their text differs."""
    found: dict[str, Path] = {}
    for f in trajectory_files(path):
        meta = pq.read_schema(f).metadata or {}
        raw = meta.get(TEXT_OPTIONS_KEY.encode())
        if raw is not None:
            found.setdefault(raw.decode(), f)
    if len(found) > 1:
        (a, fa), (b, fb) = list(found.items())[:2]
        raise TrajectoryError(
            f"{path}: its files were played with different env text options ({fa.name}: {a}; "
            f"{fb.name}: {b}); collect each setting into its own directory")
    return json.loads(next(iter(found))) if found else None


def write_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` through a temp file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def trajectory_dir(path: str | Path) -> Path:
    """Accept a trajectory directory or a collect run directory holding ``trajectories/``."""
    p = Path(path)
    return p / "trajectories" if (p / "trajectories").is_dir() else p


def trajectory_files(path: str | Path) -> list[Path]:
    """The Parquet files of a trajectory directory (or the file itself), sorted, temp files
    excluded."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise TrajectoryError(f"{p}: no such trajectory file or directory")
    return sorted(f for f in p.rglob("*.parquet") if not f.name.startswith("."))


def validate_table(table: pa.Table, source: str) -> None:
    """Check columns, types and nulls; errors name ``source``, the field and the first bad row."""
    schema = table.schema
    for f in BASE_FIELDS:
        if f.name not in schema.names:
            raise TrajectoryError(
                f"{source}: missing column {f.name!r}; trajectory files need the columns "
                f"{REQUIRED_COLUMNS} (write them with policylm collect or import-minari)"
            )
        got = schema.field(f.name).type
        if got != f.type and not (pa.types.is_list(got) and pa.types.is_list(f.type)):
            raise TrajectoryError(f"{source}: column {f.name!r} has type {got}, expected {f.type}")
        col = table.column(f.name)
        if col.null_count and not f.nullable:
            row = int(pc.index(pc.is_null(col), True).as_py())
            raise TrajectoryError(f"{source}: row {row}, field {f.name!r} is null")


def read_trajectories(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read and validate every trajectory file under ``path`` into one table."""
    tables = []
    for f in trajectory_files(path):
        try:
            table = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise TrajectoryError(f"{f}: not a readable Parquet file ({err})") from err
        validate_table(table, str(f))
        tables.append(table.select(list(columns)) if columns else table)
    if not tables:
        raise TrajectoryError(f"{path}: no trajectory files (*.parquet) found")
    return pa.concat_tables(tables, promote_options="permissive")


def episode_table(steps: pa.Table) -> pa.Table:
    """One row per (episode, agent): ids, length, return, and how it ended."""
    df = steps.select(
        [RUN_ID, EPISODE_ID, ENV_ID, POLICY_URI, SKILL, SEED, AGENT_ID, T, REWARD,
         TERMINATED, TRUNCATED]
    ).to_pandas()
    df = df.sort_values([EPISODE_ID, AGENT_ID, T])
    g = df.groupby([EPISODE_ID, AGENT_ID], sort=True)
    first, last = g.first(), g.last()
    out = first[[RUN_ID, ENV_ID, POLICY_URI, SKILL, SEED]].copy()
    out["length"] = g.size().astype(np.int32)
    out["return"] = g[REWARD].sum().astype(np.float64)
    out[TERMINATED] = last[TERMINATED].astype(bool)
    out[TRUNCATED] = last[TRUNCATED].astype(bool)
    out = out.reset_index()
    return pa.Table.from_pandas(out, schema=EPISODE_TABLE_SCHEMA, preserve_index=False)


def return_stats(values: Iterable[float]) -> dict[str, float | None]:
    """Count, mean, median, min, max, (population) std of ``values``, and the standard error
    of the mean (sample std / sqrt(n); None with fewer than two values)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"count": 0}
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "std": float(v.std()),
        "se": float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None,
    }


def skill_stats(episodes: pa.Table) -> dict[str, dict]:
    """Per-skill return and length statistics over an episode table."""
    df = episodes.to_pandas()
    out = {}
    for skill, g in df.groupby(SKILL, sort=True):
        out[str(skill)] = {
            "episodes": len(g),
            "return": return_stats(g["return"]),
            "length": return_stats(g["length"]),
        }
    return out
