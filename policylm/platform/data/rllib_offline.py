"""Trajectory rows -> RLlib's offline column format (the one place this conversion lives).

RLlib's offline API (new stack) reads Parquet through Ray Data with the column names of
``ray.rllib.core.columns.Columns``: ``obs``, ``new_obs``, ``actions``, ``rewards``,
``terminateds``, ``truncateds``, ``eps_id``. Our trajectory ``obs`` column already holds the
adapter's flat observation (what RLlib modules see through ``FlatObsEnv``); ``new_obs`` is the next
row's ``obs`` in the same episode, or ``final_obs`` on an episode's last row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policylm.platform.data import trajectories as tr

RLLIB_SCHEMA = pa.schema(
    [
        pa.field("eps_id", pa.string()),
        pa.field("t", pa.int32()),
        pa.field("obs", pa.list_(pa.float32())),
        pa.field("new_obs", pa.list_(pa.float32())),
        pa.field("actions", pa.int64()),
        pa.field("rewards", pa.float64()),
        pa.field("terminateds", pa.bool_()),
        pa.field("truncateds", pa.bool_()),
    ]
)
NEEDED = [tr.EPISODE_ID, tr.AGENT_ID, tr.T, tr.OBS, tr.FINAL_OBS, tr.ACTION_INDEX, tr.REWARD,
          tr.TERMINATED, tr.TRUNCATED, tr.EPISODE_LENGTH]


def to_rllib_rows(batch: pa.Table) -> pa.Table:
    """Convert whole episodes of trajectory rows to :data:`RLLIB_SCHEMA` rows, ordered by episode
    and step. Each episode must be complete in ``batch`` (steps 0..length-1 and ``final_obs`` on
    the last): trajectory files hold whole episodes, so map over files, not arbitrary slices.
    Multi-agent rows become one RLlib episode per (episode, agent)."""
    missing = [c for c in NEEDED if c not in batch.column_names]
    if missing:
        raise ValueError(f"trajectory rows lack columns {missing}; pass rows written by "
                         "policylm collect (see policylm.platform.data.trajectories)")
    if batch.num_rows == 0:
        return RLLIB_SCHEMA.empty_table()
    batch = batch.select(NEEDED).sort_by([(tr.EPISODE_ID, "ascending"),
                                          (tr.AGENT_ID, "ascending"), (tr.T, "ascending")])
    ep = batch.column(tr.EPISODE_ID).to_pylist()
    agent = batch.column(tr.AGENT_ID).to_numpy()
    t = batch.column(tr.T).to_numpy()
    length = batch.column(tr.EPISODE_LENGTH).to_numpy()
    obs = batch.column(tr.OBS).to_pylist()
    final = batch.column(tr.FINAL_OBS).to_pylist()
    eps_ids = [e if a == 0 else f"{e}/{a}" for e, a in zip(ep, agent, strict=True)]
    new_obs: list = []
    for i in range(batch.num_rows):
        last = i + 1 == batch.num_rows or eps_ids[i + 1] != eps_ids[i]
        first = i == 0 or eps_ids[i - 1] != eps_ids[i]
        if (first and t[i] != 0) or (not first and t[i] != t[i - 1] + 1):
            raise ValueError(f"episode {ep[i]} is not complete in this batch (step {t[i]}); "
                             "convert whole trajectory files")
        if last:
            if t[i] != length[i] - 1 or final[i] is None:
                raise ValueError(f"episode {ep[i]} ends at step {t[i]} of {length[i]} without "
                                 "final_obs; convert whole trajectory files")
            new_obs.append(final[i])
        else:
            new_obs.append(obs[i + 1])
    return pa.table(
        {
            "eps_id": pa.array(eps_ids, pa.string()),
            "t": batch.column(tr.T),
            "obs": pa.array(obs, pa.list_(pa.float32())),
            "new_obs": pa.array(new_obs, pa.list_(pa.float32())),
            "actions": pc.cast(batch.column(tr.ACTION_INDEX), pa.int64()),
            "rewards": batch.column(tr.REWARD),
            "terminateds": batch.column(tr.TERMINATED),
            "truncateds": batch.column(tr.TRUNCATED),
        },
        schema=RLLIB_SCHEMA,
    )


def action_accuracy(logits: np.ndarray, actions: np.ndarray) -> float:
    """Share of rows whose highest logit is the demonstrated action (``logits`` [N, A])."""
    logits, actions = np.asarray(logits), np.asarray(actions).reshape(-1)
    if logits.shape[0] != actions.shape[0] or actions.size == 0:
        raise ValueError(f"need one row of logits per action, got {logits.shape[0]} and "
                         f"{actions.shape[0]}")
    return float((logits.argmax(-1) == actions).mean())
