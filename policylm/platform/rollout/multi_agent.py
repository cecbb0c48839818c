"""Collecting multi-agent episodes (MettaGrid): every agent of every live env acts in one policy
call per step.

A multi-agent adapter (``adapter.num_agents > 1``) makes envs whose ``reset(seed)`` gives one
observation per agent and whose ``step(actions)`` takes one action per agent and gives one
reward, ``terminated`` and ``truncated`` per agent. Policy slots are ``env slot * num_agents +
agent``, so per-agent state (random streams, the adaptive target of the LLM policy) is per
agent; an LLM policy scores all agents' prompts in one batched engine call.

Trajectories get one row per agent per step. Each agent's steps form their own episode (episode
id ``<episode id>-a<agent:02d>``, ``agent_id`` = the agent), so return-to-go, the episode table,
dataset splits and filters are per agent with no change; the arena episode is the id before
``-a``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from policylm.platform.data.trajectories import agent_episode_id
from policylm.platform.envs import EnvAdapter
from policylm.platform.rollout.runner import EpisodeRunner, EpisodeSpec, _Episode, last_act


class MultiAgentRunner(EpisodeRunner):
    """:class:`EpisodeRunner` for multi-agent adapters (see module docstring)."""

    def __init__(self, adapter: EnvAdapter, num_envs: int = 1, gamma: float = 1.0):
        if adapter.num_agents < 2:
            raise ValueError(f"{adapter.env_id} has one agent; use EpisodeRunner")
        super().__init__(adapter, num_envs, gamma)

    def run(self, specs: Sequence[EpisodeSpec], run_id: str,
            on_episode: Callable[[pa.Table], None] | None = None) -> pa.Table:
        """Play every spec (all of one policy); returns their steps, episode by episode and
        agent by agent. ``on_episode`` gets each finished multi-agent episode's table."""
        if not specs:
            return self.schema.empty_table()
        policy = self.chunk_policy(specs)
        n = self.adapter.num_agents
        queue = list(specs)
        # env slot -> (agents' episodes, agents' observations)
        live: dict[int, tuple[list[_Episode], list[Any]]] = {}
        done: dict[str, pa.Table] = {}

        def start(slot: int) -> None:
            spec = queue.pop(0)
            obs, _ = self.envs[slot].reset(seed=spec.seed)
            for a in range(n):
                policy.reset(slot * n + a, spec.policy_seed() * n + a)
            live[slot] = ([_Episode(spec, a, agent_episode_id(spec.episode_id, a))
                           for a in range(n)], list(obs))

        for slot in range(min(len(self.envs), len(queue))):
            start(slot)
        while live:
            slots = sorted(live)
            batch = [o for s in slots for o in live[s][1]]
            actions = policy.act(batch, [s * n + a for s in slots for a in range(n)])
            thoughts = last_act(policy.thoughts, len(batch))
            targets = last_act(policy.targets, len(batch))
            rewarded: list[tuple[int, float]] = []
            ended: list[int] = []
            for k, slot in enumerate(slots):
                episodes, obs = live[slot]
                mine = actions[k * n:(k + 1) * n]
                for ep, o, act, thought, target in zip(
                        episodes, obs, mine, thoughts[k * n:(k + 1) * n],
                        targets[k * n:(k + 1) * n], strict=True):
                    self._record_step(ep, o, self.envs[slot], act, thought, target)
                obs, rewards, term, trunc, _ = self.envs[slot].step(
                    np.asarray(mine, dtype=np.int64))
                self.steps_taken += n
                for a, ep in enumerate(episodes):
                    ep.reward.append(float(rewards[a]))
                    ep.terminated.append(bool(term[a]))
                    ep.truncated.append(bool(trunc[a]))
                    rewarded.append((slot * n + a, float(rewards[a])))
                if bool(np.all(np.logical_or(term, trunc))):
                    tables = []
                    for ep, o in zip(episodes, obs, strict=True):
                        ep.final_obs = self.adapter.flatten(o)
                        tables.append(self._episode_table(ep, run_id))
                    done[episodes[0].spec.episode_id] = pa.concat_tables(tables)
                    if on_episode is not None:
                        on_episode(done[episodes[0].spec.episode_id])
                    del live[slot]
                    ended.append(slot)
                else:
                    live[slot] = (episodes, list(obs))
            # rewards first, then the ended slots' next episodes (see EpisodeRunner.run)
            policy.observe([s for s, _ in rewarded], [r for _, r in rewarded])
            for slot in ended:
                if queue:
                    start(slot)
        return pa.concat_tables([done[s.episode_id] for s in specs])


def make_runner(adapter: EnvAdapter, num_envs: int = 8, gamma: float = 1.0) -> EpisodeRunner:
    """The runner for ``adapter``'s env: :class:`MultiAgentRunner` when it has several agents."""
    if adapter.num_agents > 1:
        return MultiAgentRunner(adapter, num_envs, gamma)
    return EpisodeRunner(adapter, num_envs, gamma)
