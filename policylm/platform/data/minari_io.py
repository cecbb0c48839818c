"""Minari datasets <-> trajectories.

Export builds ``EpisodeBuffer`` objects from the trajectory arrays and calls
``minari.create_dataset_from_buffers(..., data_format="arrow")`` (no jax needed); observations are
the trajectory's flat ``obs`` vectors (plus each episode's ``final_obs``), so the dataset's
observation space is a flat ``Box``. Import reads any local Minari dataset (``minari.load_dataset``;
``MINARI_DATASETS_PATH`` sets the store) into the trajectory schema, encoding observations and
actions with the generic text encoders of the dataset's spaces.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa

from policylm.platform.data import trajectories as tr
from policylm.platform.data.returns import returns_to_go
from policylm.platform.envs import dumps_json, generic_encoders, make_adapter
from policylm.platform.envs.codecs import default_codec


def _actions(space: gym.Space, rows: list) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float32)
    if isinstance(space, gym.spaces.Discrete):
        return arr[:, 0].astype(np.int64)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return arr.astype(np.int64)
    return arr.reshape((len(rows), *space.shape)).astype(space.dtype)


def export_minari(steps: pa.Table, dataset_id: str, action_space: gym.Space,
                  env_id: str | None = None, observation_space: gym.Space | None = None,
                  description: str = "", ref_scores: tuple[float, float] | None = None,
                  max_episode_steps: int | None = None) -> Any:
    """Write the episodes of ``steps`` (agent 0) as Minari dataset ``dataset_id``.

    ``action_space`` is the env's (actions are stored flat in trajectories). ``env_id``, when
    given, is recorded so ``recover_environment`` works. ``observation_space`` is used when it
    is a ``Box`` of the stored vectors' shape (the env's own space, when obs are not reshaped);
    otherwise the space is an unbounded flat ``Box``. ``ref_scores`` (random, expert) are the
    reference returns ``minari.get_normalized_score`` scales by, as D4RL's are;
    ``max_episode_steps`` is the time limit the episodes were played with, recorded in the
    env spec that ``recover_environment`` builds (the references hold at that limit)."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    df = steps.select([tr.EPISODE_ID, tr.SEED, tr.T, tr.OBS, tr.ACTION, tr.REWARD,
                       tr.TERMINATED, tr.TRUNCATED, tr.FINAL_OBS]).to_pandas()
    df = df.sort_values([tr.EPISODE_ID, tr.T])
    dim = len(df[tr.OBS].iloc[0]) if len(df) else 0
    obs_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
    if isinstance(observation_space, gym.spaces.Box) and observation_space.shape == (dim,):
        obs_space = observation_space  # stored in the space's own dtype (MuJoCo: float64)
    buffers = []
    for i, (ep_id, g) in enumerate(df.groupby(tr.EPISODE_ID, sort=True)):
        final = g[tr.FINAL_OBS].iloc[-1]
        if final is None:
            raise tr.TrajectoryError(f"episode {ep_id}: last row has no final_obs to export")
        obs = np.stack([*g[tr.OBS].to_list(), final]).astype(obs_space.dtype)
        buffers.append(EpisodeBuffer(
            id=i, seed=int(g[tr.SEED].iloc[0]), observations=obs,
            actions=_actions(action_space, g[tr.ACTION].to_list()),
            rewards=g[tr.REWARD].to_numpy(np.float64).tolist(),
            terminations=g[tr.TERMINATED].astype(bool).tolist(),
            truncations=g[tr.TRUNCATED].astype(bool).tolist(),
        ))
    if not buffers:
        raise tr.TrajectoryError("no episodes to export")
    store = minari_store()
    final = store / dataset_id
    if final.exists():
        raise tr.TrajectoryError(f"Minari dataset {dataset_id!r} already exists in {store}; "
                                 "choose another id (or version) or delete it first")
    # written under a temporary store beside the real one and moved into place when complete,
    # so a failed export leaves nothing half-written
    tmp = store / f".policylm-export-{uuid.uuid4().hex[:8]}"
    os.environ["MINARI_DATASETS_PATH"] = str(tmp)
    try:
        minari.create_dataset_from_buffers(
            dataset_id, buffers, observation_space=obs_space,
            env=dataclasses.replace(gym.spec(env_id), max_episode_steps=max_episode_steps)
            if env_id and max_episode_steps else env_id,
            action_space=action_space, algorithm_name="policylm",
            **({} if ref_scores is None else {"ref_min_score": float(ref_scores[0]),
                                              "ref_max_score": float(ref_scores[1])}),
            description=description or f"policylm trajectories of {env_id}",
            data_format="arrow")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / dataset_id, final)
    finally:
        os.environ["MINARI_DATASETS_PATH"] = str(store)
        shutil.rmtree(tmp, ignore_errors=True)
    return minari.load_dataset(dataset_id)


def minari_store() -> Path:
    """The local Minari store (``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``), made
    absolute in this process's environment: Minari mishandles a relative one (it joins it
    twice)."""
    path = Path(os.environ.get("MINARI_DATASETS_PATH")
                or Path.home() / ".minari" / "datasets").absolute()
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    return path


def import_minari(dataset_id: str, run_id: str, skill: str = "minari") -> pa.Table:
    """Read local Minari dataset ``dataset_id`` into one trajectory table."""
    import minari

    minari_store()
    try:
        ds = minari.load_dataset(dataset_id)
    except (FileNotFoundError, ValueError) as err:
        raise tr.TrajectoryError(
            f"Minari dataset {dataset_id!r} is not in the local store ({err}); set "
            "MINARI_DATASETS_PATH to the directory that holds it"
        ) from err
    obs_space, act_space = ds.observation_space, ds.action_space
    env_id = ds.spec.env_spec.id if ds.spec.env_spec is not None else dataset_id
    encode, to_json = generic_encoders(obs_space)
    codec = default_codec(act_space)
    adapter = _env_adapter(env_id)
    # the env's own text is better than numbers wherever the dataset's spaces are the env's
    if adapter is not None and adapter.observation_space == obs_space:
        encode, to_json = adapter.encode, adapter.to_json
    if adapter is not None and adapter.action_space == act_space:
        codec = adapter.codec
    tables = []
    for ep in ds.iterate_episodes():
        n = len(ep.rewards)
        obs_list = [_index(ep.observations, t) for t in range(n + 1)]
        flat = [np.asarray(gym.spaces.flatten(obs_space, o), np.float32) for o in obs_list]
        actions = [_index(ep.actions, t) for t in range(n)]
        rewards = np.asarray(ep.rewards, dtype=np.float64)
        term = np.asarray(ep.terminations, dtype=bool)
        trunc = np.asarray(ep.truncations, dtype=bool)
        ep_id = f"{skill}-{dataset_id.replace('/', '_')}-e{int(ep.id):05d}"
        cols = {
            tr.RUN_ID: [run_id] * n, tr.EPISODE_ID: [ep_id] * n, tr.ENV_ID: [env_id] * n,
            tr.POLICY_URI: [f"minari:{dataset_id}"] * n, tr.SKILL: [skill] * n,
            tr.SEED: [-1] * n, tr.AGENT_ID: [0] * n,
            tr.T: list(range(n)), tr.OBS: flat[:n],
            tr.OBS_TEXT: [encode(o) for o in obs_list[:n]],
            tr.OBS_JSON: [dumps_json(to_json(o)) for o in obs_list[:n]],
            tr.ACTION: [np.asarray(a, np.float32).reshape(-1) for a in actions],
            tr.ACTION_INDEX: [codec.index(a) for a in actions],
            tr.ACTION_TEXT: [codec.to_text(a) for a in actions],
            tr.REWARD: rewards, tr.RTG: returns_to_go(rewards, 1.0, bool(term[-1])),
            tr.TERMINATED: term, tr.TRUNCATED: trunc,
            tr.EPISODE_RETURN: [float(rewards.sum())] * n, tr.EPISODE_LENGTH: [n] * n,
            tr.FINAL_OBS: [None] * (n - 1) + [flat[n]],
        }
        tables.append(pa.table(cols, schema=tr.trajectory_schema()))
    if not tables:
        raise tr.TrajectoryError(f"Minari dataset {dataset_id!r} has no episodes")
    return pa.concat_tables(tables)


def _env_adapter(env_id: str) -> Any:
    """The env's own adapter, or ``None`` when the env cannot be made here."""
    try:
        return make_adapter(env_id)
    except Exception:  # any failure to make the env means: fall back to generic text
        return None


def _index(tree: Any, t: int) -> Any:
    if isinstance(tree, dict):
        return {k: _index(v, t) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_index(v, t) for v in tree)
    return tree[t]
