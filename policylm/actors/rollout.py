"""Rollout actors: thin Ray shells around :class:`policylm.platform.rollout.runner.EpisodeRunner`
(or its multi-agent form, :class:`policylm.platform.rollout.multi_agent.MultiAgentRunner`).

A :class:`RolloutGroup` spreads the chunks of a collection plan over ``num_workers`` actors
(``num_workers=0``: everything in this process, no Ray), placed on as many nodes as it can
(``SPREAD``). Actors send each played chunk back through the object store and the driver
writes it atomically under the chunk's deterministic name, so a run's trajectories land in its
own directory whichever node played them, and a retried chunk never duplicates or half-writes
episodes. Actors restart when their process dies and Ray retries the chunk they were playing.

Online training sends policy weights with every chunk (a version number, and the weights by
object reference): a worker that Ray restarted, or a new one, loads the current weights before
it plays, and every episode is stamped with the version it was played with
(``policy_version``), so a learner can check that it trains on its own policy's episodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policylm.platform.rollout.runner import Chunk, chunk_summaries, read_chunk, write_chunk
from policylm.runtime import init_ray

FAULT_MARKER = ".fault-injected"


@dataclass
class RolloutSpec:
    """What every rollout worker needs to build its envs (sent to the actor, so picklable)."""

    env_id: str
    env_options: dict = field(default_factory=dict)
    num_envs: int = 8
    gamma: float = 1.0
    out_dir: str = "."
    run_id: str = "run"
    # Test-only fault injection: the first worker process to finish this many episodes exits
    # abruptly (once per out_dir), mid-chunk, before the chunk is returned. 0 = off.
    kill_after_episodes: int = 0
    # torch threads per worker: 1 when actors share the cores; more for one LLM worker
    torch_threads: int = 1


@dataclass
class Weights:
    """Policy weights for online training: LoRA tensors (a PEFT state dict, or a one-item list
    holding its object reference, so a worker fetches it only when its version is new), their
    scaling and a version number."""

    version: int
    scaling: float
    tensors: Any


class RolloutWorker:
    """Plays chunks for a :class:`RolloutSpec`. Runs as an actor or in-process."""

    def __init__(self, spec: RolloutSpec):
        from policylm.platform.envs import make_adapter
        from policylm.platform.rollout.multi_agent import make_runner

        self.spec = spec
        self.runner = make_runner(make_adapter(spec.env_id, **spec.env_options),
                                  spec.num_envs, spec.gamma)
        self.episodes_done = 0
        self.lora: tuple[dict, float] | None = None
        self.lora_versions: dict[int, int] = {}
        try:  # small networks act faster on one thread, and actors share the cores
            import torch

            torch.set_num_threads(spec.torch_threads)
        except ImportError:
            pass

    def _on_episode(self, _table: Any) -> None:
        self.episodes_done += 1
        n = self.spec.kill_after_episodes
        marker = Path(self.spec.out_dir) / FAULT_MARKER
        if n and self.episodes_done >= n and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"pid {os.getpid()} exited after {self.episodes_done} episodes\n")
            os._exit(1)

    def collect(self, chunk: Chunk, weights: Weights | None = None) -> tuple[Any, dict]:
        """Play one chunk (with ``weights`` for the live LLM policies, when given); returns its
        steps (an Arrow table) and what its policies counted while playing it."""
        self.set_weights(weights)
        policy = self.runner.policy(chunk.specs[0].policy_uri)
        self._apply_lora()  # the chunk's policy may be new
        before = policy.stats()
        before = dict(before) if before is not None else None
        table = self.runner.run(chunk.specs, self.spec.run_id, self._on_episode)
        counts = {}
        if before is not None:  # every count the policy keeps (rates are recomputed from them)
            after = policy.stats()
            counts = {chunk.specs[0].policy_uri: {k: v - before.get(k, 0)
                                                  for k, v in after.items()
                                                  if isinstance(v, int)}}
        return table, counts

    def set_weights(self, weights: Weights | None) -> int:
        """Take ``weights`` unless this worker already plays their version; returns the
        engines updated."""
        if weights is None or weights.version == self.runner.version:
            return 0
        tensors = weights.tensors
        if isinstance(tensors, list):  # an object reference, fetched only now
            import ray

            tensors = ray.get(tensors[0])
        self.lora = (tensors, weights.scaling)
        self.runner.version = weights.version
        return self._apply_lora()

    def _apply_lora(self) -> int:
        """Put the current LoRA weights into the engines of live LLM policies (``live=`` in
        their URI); other policies keep the weights they asked for."""
        if self.lora is None:
            return 0
        tensors, scaling = self.lora
        done = 0
        for policy in self.runner.policies.values():
            if self.lora_versions.get(id(policy)) != self.runner.version:
                done += policy.set_lora(tensors, scaling)
                self.lora_versions[id(policy)] = self.runner.version
        return done

    def action_scores(self, uri: str, observations: list,
                      weights: Weights | None = None) -> list[list[float] | None]:
        """What the LLM policy at ``uri`` scores the valid actions for these observations (step
        0, its target), with ``weights`` (or those this worker holds): for checking weight
        sync."""
        import numpy as np

        self.set_weights(weights)
        policy = self.runner.policy(uri)
        self._apply_lora()
        n = len(observations)
        texts = [self.runner.adapter.encode(np.asarray(o)) for o in observations]
        decisions = policy.decide(texts, [policy.cfg.target_return] * n, [0] * n,
                                  [np.random.default_rng(0)] * n)
        return [d.scores for d in decisions]

    def steps_taken(self) -> int:
        return self.runner.steps_taken

    def where(self) -> dict:
        """This worker's process id and (as an actor) Ray node id."""
        try:
            import ray

            node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        except ImportError:
            node = None
        return {"pid": os.getpid(), "node_id": node}


class RolloutGroup:
    """``num_workers`` rollout actors (or in-process with ``num_workers=0``) playing chunks.

    ``max_restarts``/``max_task_retries`` go to Ray; a chunk whose actor is lost for good is
    played again on a fresh actor, up to ``max_chunk_attempts`` times. Played chunks are
    written to ``spec.out_dir`` by this process; chunks already there (an earlier attempt of the
    same run) are read instead of played.
    """

    def __init__(
        self,
        spec: RolloutSpec,
        num_workers: int = 2,
        cpus_per_worker: float = 1.0,
        max_restarts: int = 3,
        max_task_retries: int = 3,
        max_chunk_attempts: int = 3,
    ):
        self.spec, self.num_workers = spec, num_workers
        self.max_chunk_attempts = max_chunk_attempts
        self._options = {"num_cpus": cpus_per_worker, "max_restarts": max_restarts,
                         "max_task_retries": max_task_retries, "scheduling_strategy": "SPREAD"}
        self.local = RolloutWorker(spec) if num_workers == 0 else None
        self.actors = [self._new_actor() for _ in range(num_workers)]
        self.weights: Weights | None = None
        self.counts: dict[str, dict[str, int]] = {}
        self.episodes_played = 0
        self.closed = False  # shut down: a chunk whose actor was killed is not played again

    def _new_actor(self) -> Any:
        import ray

        return ray.remote(RolloutWorker).options(**self._options).remote(self.spec)

    def set_lora(self, weights: dict, scaling: float, version: int) -> None:
        """Weights for the live LLM policies from now on: sent with every chunk (put in the
        object store once), so restarted and new actors play with them too."""
        if self.local is not None:
            self.weights = Weights(version, scaling, weights)
            self.local.set_weights(self.weights)
            return
        import ray

        self.weights = Weights(version, scaling, [ray.put(weights)])

    def run(self, chunks: Sequence[Chunk],
            on_chunk: Callable[[Chunk, list[dict]], None] | None = None) -> list[dict]:
        """Play every chunk not already written; returns the episode summaries in plan
        order."""
        results: dict[str, list[dict]] = {}
        todo = []
        for chunk in chunks:
            table = read_chunk(self.spec.out_dir, chunk)
            if table is None:
                todo.append(chunk)
            else:
                self._done(chunk, table, None, results, on_chunk)
        if self.local is not None:
            for chunk in todo:
                self._done(chunk, *self.local.collect(chunk, self.weights), results, on_chunk)
        else:
            from policylm.platform.policies.uri import uri_paths
            from policylm.runtime import check_visible

            uris = sorted({s.policy_uri for chunk in todo for s in chunk.specs})
            check_visible([("policy", p) for uri in uris for p in uri_paths(uri)])
            self._run_remote(todo, results, on_chunk)
        return [s for chunk in chunks for s in results[chunk.chunk_id]]

    def _done(self, chunk: Chunk, table: Any, counts: dict | None, results: dict,
              on_chunk: Callable[[Chunk, list[dict]], None] | None) -> None:
        """A chunk's steps are in: written when just played (``counts`` not None: what its
        policy counted), then summarised."""
        if counts is not None:
            write_chunk(table, self.spec.out_dir, chunk)
            self.episodes_played += len(chunk.specs)
            for uri, c in counts.items():
                acc = self.counts.setdefault(uri, {"actions": 0, "invalid": 0})
                for k, v in c.items():
                    acc[k] = acc.get(k, 0) + v
        results[chunk.chunk_id] = chunk_summaries(table)
        if on_chunk:
            on_chunk(chunk, results[chunk.chunk_id])

    def _run_remote(self, todo: list[Chunk], results: dict[str, list[dict]],
                    on_chunk: Callable[[Chunk, list[dict]], None] | None) -> None:
        import ray
        from ray.exceptions import RayActorError

        attempts: dict[str, int] = {}
        pending: dict[Any, tuple[int, Chunk]] = {}
        idle = list(range(len(self.actors)))
        todo = list(reversed(todo))
        while todo or pending:
            while todo and idle:
                i, chunk = idle.pop(0), todo.pop()
                attempts[chunk.chunk_id] = attempts.get(chunk.chunk_id, 0) + 1
                pending[self.actors[i].collect.remote(chunk, self.weights)] = (i, chunk)
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, chunk = pending.pop(ready[0])
            try:
                table, counts = ray.get(ready[0])
            except RayActorError:
                if attempts[chunk.chunk_id] >= self.max_chunk_attempts or self.closed:
                    raise
                self.actors[i] = self._new_actor()  # the old one is gone for good
                todo.append(chunk)
            else:
                self._done(chunk, table, counts, results, on_chunk)
            idle.append(i)

    def steps_taken(self) -> int:
        """Env steps taken by the live workers (restarted actors count from zero)."""
        if self.local is not None:
            return self.local.steps_taken()
        import ray

        return sum(ray.get([a.steps_taken.remote() for a in self.actors]))

    def workers(self) -> list[dict]:
        """Where each worker runs (process and node ids)."""
        if self.local is not None:
            return [self.local.where()]
        import ray

        return ray.get([a.where.remote() for a in self.actors])

    def policy_stats(self) -> dict[str, dict]:
        """Per policy URI, what its policies counted over every chunk this group played (kept
        here, so a restarted actor loses nothing): actions, invalid answers and their rate
        (None when nothing was counted), and in think mode the answers without an action line
        and their rate."""
        from policylm.platform.policies.base import with_rates

        return {uri: with_rates(c) for uri, c in self.counts.items()}

    def shutdown(self) -> None:
        import ray

        self.closed = True
        if self.local is not None:
            self.local.runner.close()
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def check_policies(uris: list[str], adapter: Any) -> None:
    """Before any actor starts: each URI checked for ``adapter``'s env (no weights loaded;
    errors name the URI), and each embedded ``hf://`` model converted into the cache once here
    rather than by every actor at the same time."""
    from policylm.platform.engines.models import resolve_model
    from policylm.platform.policies import check_uri, split_uri

    for uri in uris:
        check_uri(uri, adapter)
        scheme, body, _ = split_uri(uri)
        if scheme == "hf":
            resolve_model(body)


def play_policies(policies: list[tuple[str, str]], env_id: str, env_options: dict,
                  episodes: int, run_dir: Path, num_workers: int, envs_per_worker: int,
                  torch_threads: int, seed: int) -> dict:
    """Play ``episodes`` of each ``(label, uri)`` on the same env seeds with a
    :class:`RolloutGroup` of ``num_workers`` actors (0: in this process), in chunks of
    :func:`~policylm.platform.rollout.runner.balanced_chunk_size` (at most ``envs_per_worker``,
    fewer when that keeps every actor busy), writing ``run_dir/trajectories``; returns the
    policies' statistics (actions, invalid answers)."""
    from policylm.platform.console import progress
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import absolute_paths
    from policylm.platform.rollout.runner import balanced_chunk_size, plan_chunks

    policies = [(label, absolute_paths(uri)) for label, uri in policies]
    check_policies([uri for _, uri in policies], make_adapter(env_id, **env_options))
    size = balanced_chunk_size(len(policies) * episodes, num_workers, envs_per_worker)
    chunks = plan_chunks(policies, episodes, seed, size, shared_seeds=True)
    spec = RolloutSpec(env_id, env_options, size, 1.0,
                       str((run_dir / "trajectories").resolve()), run_dir.name,
                       torch_threads=torch_threads)
    if num_workers:
        init_ray()
    group = RolloutGroup(spec, num_workers=num_workers)
    with progress(total=len(policies) * episodes, desc=f"{run_dir.name} episodes",
                  unit="ep") as bar:
        try:
            group.run(chunks, lambda chunk, summaries: bar.update(len(chunk.specs)))
            return group.policy_stats()
        finally:
            group.shutdown()
