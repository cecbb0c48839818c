"""Collecting episodes in-process: a batch of envs stepped together by one policy.

:func:`plan_chunks` turns (policy URIs, skills, episodes per policy, seed) into deterministic
chunks of :class:`EpisodeSpec`; :class:`EpisodeRunner` plays a chunk over its batch of envs and
returns the steps as one Arrow table; :func:`write_chunk` writes it atomically to the chunk's
own file and :func:`read_chunk` finds it again on a resumed run. Rollout actors are thin shells
around these (``policylm.actors``), and ``num_workers=0`` runs them right here.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from policylm.platform.data import trajectories as tr
from policylm.platform.data.returns import returns_to_go
from policylm.platform.envs import EnvAdapter, dumps_json
from policylm.platform.policies import Policy, policy_from_uri


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: its id (the idempotency key), policy, skill label and env seed;
    ``stream`` > 0 gives the policy a sampling stream of its own for that seed (the episodes
    of a GRPO group start alike and sample apart, in one chunk)."""

    episode_id: str
    policy_uri: str
    skill: str
    seed: int
    stream: int = 0

    def policy_seed(self) -> int:
        """The seed the policy's random draws start from: the env seed (stream 0), else one
        derived from it and the stream."""
        return self.seed if not self.stream else derive_seed(self.seed, "stream", self.stream)


@dataclass(frozen=True)
class Chunk:
    """Episodes of one policy written together to ``<chunk_id>.parquet``."""

    chunk_id: str
    specs: tuple[EpisodeSpec, ...]


def derive_seed(base_seed: int, *parts: Any) -> int:
    """A stable 31-bit seed from a base seed and labels (same inputs, same seed, any machine)."""
    digest = hashlib.sha256(repr((base_seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def plan_chunks(
    policies: Sequence[tuple[str, str]], episodes_per_policy: int, seed: int, chunk_size: int,
    shared_seeds: bool = False,
) -> list[Chunk]:
    """Deterministic work plan. ``policies``: ``[(skill, uri)]``; episode ids are
    ``<skill>-p<policy index>-e<episode index>`` and seeds come from :func:`derive_seed`.
    ``shared_seeds``: episode ``e`` of every policy starts from the same env seed (for
    comparing policies on the same starts)."""
    chunks = []
    for p, (skill, uri) in enumerate(policies):
        specs = [
            EpisodeSpec(f"{skill}-p{p}-e{e:05d}", uri, skill,
                        derive_seed(seed, e) if shared_seeds else derive_seed(seed, p, e))
            for e in range(episodes_per_policy)
        ]
        chunks.extend(chunked(f"{skill}-p{p}", specs, chunk_size))
    return chunks


def chunked(prefix: str, specs: Sequence[EpisodeSpec], chunk_size: int) -> list[Chunk]:
    """``specs`` in order, in chunks of ``chunk_size`` named ``<prefix>-c<n>``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [Chunk(f"{prefix}-c{c // chunk_size:05d}", tuple(specs[c: c + chunk_size]))
            for c in range(0, len(specs), chunk_size)]


def balanced_chunk_size(episodes: int, num_workers: int, envs_per_worker: int) -> int:
    """Episodes per chunk when ``episodes`` in all are played by ``num_workers`` actors of
    ``envs_per_worker`` envs: ``envs_per_worker``, or ``ceil(episodes / num_workers)`` when
    that is fewer, so every actor gets a chunk (10 episodes on 2 actors of 10 envs: chunks
    of 5, played at once, not one chunk of 10 while the other actor waits)."""
    if envs_per_worker < 1:
        raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
    if num_workers <= 1 or episodes < 1:
        return envs_per_worker
    return min(envs_per_worker, -(-episodes // num_workers))


def plan_groups(uri: str, label: str, groups: int, group_size: int, seed: int,
                chunk_size: int) -> list[Chunk]:
    """Deterministic plan of GRPO groups under one policy: ``group_size`` episodes from each of
    ``groups`` env seeds (group ``b`` starts from ``derive_seed(seed, b)``), each episode of a
    group with its own sampling stream (1 .. ``group_size``); episode ids
    ``<label>-s<b>-g<stream>``, in chunks of ``chunk_size`` (``<label>-c<n>``: one chunk plays
    in one batch per step, whichever groups it mixes)."""
    specs = [EpisodeSpec(f"{label}-s{b:05d}-g{g}", uri, label, derive_seed(seed, b), stream=g)
             for b in range(groups) for g in range(1, group_size + 1)]
    return chunked(label, specs, chunk_size)


@dataclass
class _Episode:
    spec: EpisodeSpec
    agent: int = 0
    episode_id: str = ""  # multi-agent: one episode id per agent (see multi_agent)
    obs: list = field(default_factory=list)
    obs_text: list = field(default_factory=list)
    obs_json: list = field(default_factory=list)
    action: list = field(default_factory=list)
    action_index: list = field(default_factory=list)
    action_text: list = field(default_factory=list)
    reward: list = field(default_factory=list)
    terminated: list = field(default_factory=list)
    truncated: list = field(default_factory=list)
    final_obs: np.ndarray | None = None
    extras: list = field(default_factory=list)
    env_state: list = field(default_factory=list)
    thought: list = field(default_factory=list)
    target: list = field(default_factory=list)


def last_act(values: Sequence | None, n: int) -> list:
    """What a policy kept of its last ``act`` (its ``thoughts`` or ``targets``), one value per
    slot in the call's order; Nones for policies that keep none."""
    return list(values) if values is not None and len(values) == n else [None] * n


class EpisodeRunner:
    """Plays episodes on ``num_envs`` envs at once; envs and policies are built once and kept.

    ``gamma`` sets the discount of the ``rtg`` column (1.0: undiscounted).
    """

    def __init__(self, adapter: EnvAdapter, num_envs: int = 8, gamma: float = 1.0):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.adapter, self.gamma = adapter, gamma
        self.envs = [adapter.make_env() for _ in range(num_envs)]
        self.policies: dict[str, Policy] = {}
        self.steps_taken = 0
        # the version of the weights the policies play with (online training), stamped on
        # every episode; None: fixed weights
        self.version: int | None = None

    def policy(self, uri: str) -> Policy:
        if uri not in self.policies:
            self.policies[uri] = policy_from_uri(uri, self.adapter)
        return self.policies[uri]

    def chunk_policy(self, specs: Sequence[EpisodeSpec]) -> Policy:
        """The one policy a chunk's specs play."""
        uris = {s.policy_uri for s in specs}
        if len(uris) != 1:
            raise ValueError(f"a chunk holds episodes of one policy, got {sorted(uris)}")
        return self.policy(specs[0].policy_uri)

    def _record_step(self, ep: _Episode, obs: Any, env: Any, action: Any,
                     thought: str | None = None, target: float | None = None) -> None:
        """The step's observation, saved state, action, the policy's thought (think mode) and
        the target return it acted for (return-conditioned policies), before the env takes
        it."""
        self._record_obs(ep, obs)
        ep.thought.append(thought)
        ep.target.append(None if target is None else float(target))
        if self.adapter.save_state is not None:
            ep.env_state.append(self.adapter.save_state(env))
        codec = self.adapter.codec
        ep.action.append(np.asarray(action, dtype=np.float32).reshape(-1))
        ep.action_index.append(codec.index(action))
        ep.action_text.append(codec.to_text(action))

    def _record_obs(self, ep: _Episode, obs: Any) -> None:
        ep.obs.append(self.adapter.flatten(obs))
        ep.obs_text.append(self.adapter.encode(obs))
        ep.obs_json.append(dumps_json(self.adapter.to_json(obs)))

    def run(
        self,
        specs: Sequence[EpisodeSpec],
        run_id: str,
        on_episode: Callable[[pa.Table], None] | None = None,
    ) -> pa.Table:
        """Play every spec (all of one policy) and return their steps, episode by episode."""
        if not specs:
            return self.schema.empty_table()
        policy = self.chunk_policy(specs)
        queue = list(specs)
        live: dict[int, tuple[_Episode, Any]] = {}
        done_tables: dict[str, pa.Table] = {}

        def start(slot: int) -> None:
            spec = queue.pop(0)
            obs, _ = self.envs[slot].reset(seed=spec.seed)
            policy.reset(slot, spec.policy_seed())
            live[slot] = (_Episode(spec), obs)

        for slot in range(min(len(self.envs), len(queue))):
            start(slot)
        while live:
            slots = sorted(live)
            actions = policy.act([live[s][1] for s in slots], slots)
            thoughts = last_act(policy.thoughts, len(slots))
            targets = last_act(policy.targets, len(slots))
            rewards: list[float] = []
            ended: list[int] = []
            for slot, action, thought, target in zip(slots, actions, thoughts, targets,
                                                     strict=True):
                ep, obs = live[slot]
                self._record_step(ep, obs, self.envs[slot], action, thought, target)
                obs, reward, term, trunc, info = self.envs[slot].step(action)
                if self.adapter.info_extras is not None:
                    ep.extras.append(self.adapter.info_extras(info))
                ep.reward.append(float(reward))
                rewards.append(float(reward))
                ep.terminated.append(bool(term))
                ep.truncated.append(bool(trunc))
                self.steps_taken += 1
                if term or trunc:
                    ep.final_obs = self.adapter.flatten(obs)
                    table = self._episode_table(ep, run_id)
                    done_tables[ep.spec.episode_id] = table
                    if on_episode is not None:
                        on_episode(table)
                    del live[slot]
                    ended.append(slot)
                else:
                    live[slot] = (ep, obs)
            # the step's rewards reach the episodes that earned them, before an ended slot's
            # next episode starts (its reset clears what the policy keeps for the slot)
            policy.observe(slots, rewards)
            for slot in ended:
                if queue:
                    start(slot)
        return pa.concat_tables([done_tables[s.episode_id] for s in specs])

    def _episode_table(self, ep: _Episode, run_id: str) -> pa.Table:
        n = len(ep.reward)
        rewards = np.asarray(ep.reward, dtype=np.float64)
        rtg = returns_to_go(rewards, self.gamma, terminated=ep.terminated[-1])
        spec = ep.spec

        def const(v: Any) -> list:
            return [v] * n

        cols = {
            tr.RUN_ID: const(run_id), tr.EPISODE_ID: const(ep.episode_id or spec.episode_id),
            tr.ENV_ID: const(self.adapter.env_id), tr.POLICY_URI: const(spec.policy_uri),
            tr.SKILL: const(spec.skill), tr.SEED: const(spec.seed), tr.AGENT_ID: const(ep.agent),
            tr.T: list(range(n)), tr.OBS: ep.obs, tr.OBS_TEXT: ep.obs_text,
            tr.OBS_JSON: ep.obs_json, tr.ACTION: ep.action, tr.ACTION_INDEX: ep.action_index,
            tr.ACTION_TEXT: ep.action_text, tr.REWARD: rewards, tr.RTG: rtg,
            tr.TERMINATED: ep.terminated, tr.TRUNCATED: ep.truncated,
            tr.EPISODE_RETURN: const(float(rewards.sum())), tr.EPISODE_LENGTH: const(n),
            tr.FINAL_OBS: [None] * (n - 1) + [ep.final_obs],
        }
        for f in self.adapter.extra_fields:
            cols[f.name] = [row.get(f.name) for row in ep.extras] if ep.extras else const(None)
        if self.adapter.save_state is not None:
            cols[tr.ENV_STATE] = ep.env_state
        cols[tr.POLICY_VERSION] = const(self.version)
        cols[tr.THOUGHT] = ep.thought
        cols[tr.TARGET_RETURN] = ep.target
        return pa.table(cols, schema=self.schema)

    @functools.cached_property
    def schema(self) -> pa.Schema:
        """The trajectory schema with this env's extra columns and text options (built once:
        the runner's env does not change)."""
        return tr.trajectory_schema([tr.POLICY_VERSION_FIELD, tr.THOUGHT_FIELD,
                                     tr.TARGET_RETURN_FIELD, *tr.env_fields(self.adapter)],
                                    self.adapter.text_options)

    def policy_stats(self) -> dict[str, dict]:
        """``{uri: policy.stats()}`` for the policies that report statistics."""
        stats = {uri: p.stats() for uri, p in self.policies.items()}
        return {uri: s for uri, s in stats.items() if s is not None}

    def close(self) -> None:
        for env in self.envs:
            env.close()


def chunk_path(out_dir: str | Path, chunk: Chunk) -> Path:
    """Where a chunk's episodes live: ``<out_dir>/<chunk_id>.parquet``."""
    return Path(out_dir) / f"{chunk.chunk_id}.parquet"


def read_chunk(out_dir: str | Path, chunk: Chunk) -> pa.Table | None:
    """The chunk's episodes when an earlier attempt of this run wrote them (resume), else None.
    A file under the chunk's name that holds other episodes (another policy, seed or plan) is
    refused with a :class:`~policylm.platform.data.trajectories.TrajectoryError`: it belongs to
    another run."""
    path = chunk_path(out_dir, chunk)
    if not path.exists():
        return None
    table = tr.read_trajectories(path)
    planned = {(s.episode_id, s.policy_uri, s.seed) for s in chunk.specs}
    stored = set(zip(table.column(tr.EPISODE_ID).to_pylist(),
                     table.column(tr.POLICY_URI).to_pylist(),
                     table.column(tr.SEED).to_pylist(), strict=True))
    # multi-agent episodes are stored per agent as <episode id>-aNN
    ids = {e for e, _, _ in planned}
    found = {(e if e in ids else tr.arena_episode_id(e), u, s) for e, u, s in stored}
    if found != planned:
        raise tr.TrajectoryError(
            f"{path} holds episodes that chunk {chunk.chunk_id} does not plan (another policy, "
            "seed or run wrote it); use a new out= directory or overwrite=true")
    return table


def write_chunk(table: pa.Table, out_dir: str | Path, chunk: Chunk) -> Path:
    """Write a played chunk atomically under its name (a retried chunk replaces its file)."""
    return tr.write_atomic(table, chunk_path(out_dir, chunk))


def chunk_summaries(table: pa.Table) -> list[dict]:
    """One summary per episode of a chunk's steps: id, skill, return, length."""
    episodes = tr.episode_table(table)
    return [
        {"episode_id": e, "skill": s, "return": r, "length": n}
        for e, s, r, n in zip(
            episodes.column(tr.EPISODE_ID).to_pylist(), episodes.column(tr.SKILL).to_pylist(),
            episodes.column("return").to_pylist(), episodes.column("length").to_pylist(),
            strict=True,
        )
    ]
