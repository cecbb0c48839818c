"""Rollout actors: thin Ray shells around :class:`policylm.platform.rollout.runner.EpisodeRunner`
(or its multi-agent form, :class:`policylm.platform.rollout.multi_agent.MultiAgentRunner`).

A :class:`RolloutGroup` spreads the chunks of a collection plan over ``num_workers`` actors
(``num_workers=0``: everything in this process, no Ray). Actors restart when their process dies
and Ray retries the chunk they were playing; chunk files are written atomically under their
deterministic names, so a retried chunk never duplicates or half-writes episodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policylm.platform.rollout.runner import Chunk, collect_chunk
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
    # abruptly (once per out_dir), mid-chunk, before the chunk is written. 0 = off.
    kill_after_episodes: int = 0
    # torch threads per worker: 1 when actors share the cores; more for one LLM worker
    torch_threads: int = 1


class RolloutWorker:
    """Plays chunks for a :class:`RolloutSpec`. Runs as an actor or in-process."""

    def __init__(self, spec: RolloutSpec):
        from policylm.platform.envs import make_adapter
        from policylm.platform.rollout.multi_agent import make_runner

        self.spec = spec
        self.runner = make_runner(make_adapter(spec.env_id, **spec.env_options),
                                  spec.num_envs, spec.gamma)
        self.episodes_done = 0
        self.lora: tuple[dict, float, int] | None = None
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

    def collect(self, chunk: Chunk) -> list[dict]:
        """Play and write one chunk; returns its episode summaries."""
        if self.lora is not None:  # the chunk's policy may be new: give its engine the weights
            self.runner.policy(chunk.specs[0].policy_uri)
            self._apply_lora()
        return collect_chunk(self.runner, chunk, self.spec.out_dir, self.spec.run_id,
                             self._on_episode)

    def set_lora(self, weights: dict, scaling: float, version: int) -> int:
        """New LoRA weights for the LLM policies' engines (applied now to the engines built so
        far, and to later ones when their first chunk comes). Returns the engines updated."""
        self.lora = (weights, scaling, version)
        return self._apply_lora()

    def _apply_lora(self) -> int:
        weights, scaling, version = self.lora
        done = 0
        for policy in self.runner.policies.values():
            engine = getattr(policy, "engine", None)
            if engine is None or not hasattr(engine, "set_lora"):
                continue
            if self.lora_versions.get(id(engine)) != version:
                engine.set_lora(weights, scaling)
                self.lora_versions[id(engine)] = version
                done += 1
        return done

    def action_scores(self, uri: str, observations: list) -> list[list[float] | None]:
        """What the LLM policy at ``uri`` scores the valid actions for these observations (step
        0, its target), with the weights this worker holds: for checking weight sync."""
        import numpy as np

        policy = self.runner.policy(uri)
        if self.lora is not None:
            self._apply_lora()
        n = len(observations)
        texts = [self.runner.adapter.encode(np.asarray(o)) for o in observations]
        decisions = policy.decide(texts, [policy.cfg.target_return] * n, [0] * n,
                                  [np.random.default_rng(0)] * n)
        return [d.scores for d in decisions]

    def steps_taken(self) -> int:
        return self.runner.steps_taken

    def policy_stats(self) -> dict[str, dict]:
        return self.runner.policy_stats()

    def pid(self) -> int:
        return os.getpid()


class RolloutGroup:
    """``num_workers`` rollout actors (or in-process with ``num_workers=0``) playing chunks.

    ``max_restarts``/``max_task_retries`` go to Ray; a chunk whose actor is lost for good is
    played again on a fresh actor, up to ``max_chunk_attempts`` times.
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
                         "max_task_retries": max_task_retries}
        self.local = RolloutWorker(spec) if num_workers == 0 else None
        self.actors = [self._new_actor() for _ in range(num_workers)]

    def _new_actor(self) -> Any:
        import ray

        return ray.remote(RolloutWorker).options(**self._options).remote(self.spec)

    def run(self, chunks: Sequence[Chunk],
            on_chunk: Callable[[Chunk, list[dict]], None] | None = None) -> list[dict]:
        """Play every chunk; returns the episode summaries in plan order."""
        results: dict[str, list[dict]] = {}
        if self.local is not None:
            for chunk in chunks:
                results[chunk.chunk_id] = self.local.collect(chunk)
                if on_chunk:
                    on_chunk(chunk, results[chunk.chunk_id])
        else:
            self._run_remote(list(chunks), results, on_chunk)
        return [s for chunk in chunks for s in results[chunk.chunk_id]]

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
                pending[self.actors[i].collect.remote(chunk)] = (i, chunk)
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, chunk = pending.pop(ready[0])
            try:
                results[chunk.chunk_id] = ray.get(ready[0])
            except RayActorError:
                if attempts[chunk.chunk_id] >= self.max_chunk_attempts:
                    raise
                self.actors[i] = self._new_actor()  # the old one is gone for good
                todo.append(chunk)
            else:
                if on_chunk:
                    on_chunk(chunk, results[chunk.chunk_id])
            idle.append(i)

    def set_lora(self, weights: dict, scaling: float, version: int) -> None:
        """Send LoRA weights to every worker through the object store (put once)."""
        if self.local is not None:
            self.local.set_lora(weights, scaling, version)
            return
        import ray

        ref = ray.put(weights)
        ray.get([a.set_lora.remote(ref, scaling, version) for a in self.actors])

    def steps_taken(self) -> int:
        """Env steps taken by the live workers (restarted actors count from zero)."""
        if self.local is not None:
            return self.local.steps_taken()
        import ray

        return sum(ray.get([a.steps_taken.remote() for a in self.actors]))

    def policy_stats(self) -> dict[str, dict]:
        """Counts summed over workers per policy URI (e.g. LLM actions and invalid answers)."""
        if self.local is not None:
            parts = [self.local.policy_stats()]
        else:
            import ray

            parts = ray.get([a.policy_stats.remote() for a in self.actors])
        total: dict[str, dict] = {}
        for part in parts:
            for uri, stats in part.items():
                acc = total.setdefault(uri, {"actions": 0, "invalid": 0})
                acc["actions"] += stats.get("actions", 0)
                acc["invalid"] += stats.get("invalid", 0)
        for acc in total.values():
            acc["invalid_rate"] = acc["invalid"] / acc["actions"] if acc["actions"] else 0.0
        return total

    def shutdown(self) -> None:
        import ray

        if self.local is not None:
            self.local.runner.close()
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def play_policies(policies: list[tuple[str, str]], env_id: str, env_options: dict,
                  episodes: int, run_dir: Path, num_workers: int, envs_per_worker: int,
                  torch_threads: int, seed: int) -> dict:
    """Play ``episodes`` of each ``(label, uri)`` on the same env seeds with a
    :class:`RolloutGroup` of ``num_workers`` actors (0: in this process), writing
    ``run_dir/trajectories``; returns the policies' statistics (actions, invalid answers)."""
    from tqdm import tqdm

    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import absolute_paths, policy_from_uri, split_uri
    from policylm.platform.rollout.runner import plan_chunks

    policies = [(label, absolute_paths(uri)) for label, uri in policies]
    for _, uri in policies:
        if split_uri(uri)[0] == "hf":  # convert/cache the model once, before the actors race
            from policylm.platform.engines.models import resolve_model

            resolve_model(split_uri(uri)[1])
    policy_from_uri(policies[0][1], make_adapter(env_id, **env_options))  # fail early
    chunks = plan_chunks(policies, episodes, seed, envs_per_worker, shared_seeds=True)
    spec = RolloutSpec(env_id, env_options, envs_per_worker, 1.0,
                       str((run_dir / "trajectories").resolve()), run_dir.name,
                       torch_threads=torch_threads)
    if num_workers:
        init_ray()
    group = RolloutGroup(spec, num_workers=num_workers)
    with tqdm(total=len(policies) * episodes, desc="episodes", unit="ep") as bar:
        try:
            group.run(chunks, lambda chunk, summaries: bar.update(len(chunk.specs)))
            return group.policy_stats()
        finally:
            group.shutdown()
