"""The policy service behind the HTTP API: request and response schemas, per-episode state for
the server-side adaptive target, and batched acting. Ray-free and web-framework-free: the Serve
deployment (``policylm.serve.app``) wraps it, the ``http://`` policy (``policylm.platform.
remote_policies``) speaks its schema, and unit tests call it directly.

Acting (``POST /v1/act``): each observation (raw, in the env's observation space as JSON, or
already text) becomes one prompt row; all rows of all requests in a batch go to the engine in one
call. With an ``episode_id`` the server keeps the episode's target, the reward earned so far and
the step: the prompt's target is ``target - earned`` (when adaptive) and the step counts up by
one per call. Without one, a call is stateless (``steps`` or 0, the given or default target).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from policylm.platform.envs import EnvAdapter
from policylm.platform.envs.spaces import SpaceValueError, from_json, to_json
from policylm.platform.prompts import PROMPT_TEMPLATE_VERSION


class RequestError(ValueError):
    """A request that parses but does not fit the policy (wrong observation shape, unknown
    episode): the message names the field and what was expected (HTTP 422 or 404)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.status = field, status


# --- schemas ---------------------------------------------------------------------------------

class ActRequest(BaseModel):
    """``POST /v1/act``: give ``observations`` (raw) or ``texts`` (already encoded), not both."""

    observations: list[Any] | None = Field(
        None, description="raw observations in the env's observation space (JSON: numbers, "
                          "nested lists, objects for Dict spaces)")
    texts: list[str] | None = Field(None, description="observations already encoded as text")
    target_return: float | list[float | None] | None = Field(
        None, description="target return, one for all or one per observation; with a known "
                          "episode id it replaces that episode's target; default: the server's")
    episode_ids: list[str] | None = Field(
        None, description="one per observation: the server keeps each episode's step, target "
                          "and reward earned (adaptive target across calls)")
    rewards: list[float] | None = Field(
        None, description="per observation: reward earned since this episode's previous call "
                          "(the same as POST /v1/episodes/{id}/reward)")
    steps: list[int] | None = Field(
        None, description="per observation: the step index, for calls without episode ids")

    @model_validator(mode="after")
    def _one_source(self) -> ActRequest:
        if (self.observations is None) == (self.texts is None):
            raise ValueError("give exactly one of observations (raw) or texts (encoded)")
        n = len(self.observations if self.observations is not None else self.texts)
        if n == 0:
            raise ValueError("observations/texts is empty; send at least one")
        for name in ("episode_ids", "rewards", "steps"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} observations")
        if isinstance(self.target_return, list) and len(self.target_return) != n:
            raise ValueError(f"target_return has {len(self.target_return)} entries for {n} "
                             "observations; give one number or one per observation")
        return self

    def size(self) -> int:
        return len(self.observations if self.observations is not None else self.texts)


class ActionOut(BaseModel):
    action: Any = Field(description="the env action (JSON)")
    text: str = Field(description="the action as text")
    target_return: float = Field(description="the target written in the prompt")
    step: int = Field(description="the step written in the prompt")
    episode_id: str | None = None
    scores: dict[str, float] | None = Field(
        None, description="score mode: log-likelihood of every valid action")
    valid: bool = Field(True, description="generate mode: False when the text did not parse "
                                          "and the fallback action was used")


class ActResponse(BaseModel):
    actions: list[ActionOut]


class RewardRequest(BaseModel):
    reward: float = Field(description="reward earned since the episode's previous report")


class EpisodeOut(BaseModel):
    episode_id: str
    step: int
    target_return: float
    earned: float
    remaining_target: float


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    """OpenAI-compatible ``POST /v1/chat/completions`` (the fields this server honours)."""

    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(16, ge=1, le=512)
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None


# --- episode state ---------------------------------------------------------------------------

@dataclass
class EpisodeState:
    target: float
    earned: float = 0.0
    t: int = 0
    last_seen: float = 0.0
    rng: np.random.Generator | None = None


class EpisodeStore:
    """Per-episode state, dropped after ``ttl_s`` seconds without a call."""

    def __init__(self, ttl_s: float = 600.0, clock: Any = time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self.episodes: dict[str, EpisodeState] = {}

    def expire(self) -> int:
        """Drop idle episodes; returns how many were dropped."""
        now = self.clock()
        old = [k for k, e in self.episodes.items() if now - e.last_seen > self.ttl_s]
        for k in old:
            del self.episodes[k]
        return len(old)

    def get(self, episode_id: str, target: float | None, default_target: float) -> EpisodeState:
        """The episode's state, created on first sight (seeded from its id)."""
        e = self.episodes.get(episode_id)
        if e is None:
            seed = int(uuid.uuid5(uuid.NAMESPACE_OID, episode_id).int % 2**32)
            e = EpisodeState(default_target if target is None else target,
                             rng=np.random.default_rng(seed))
            self.episodes[episode_id] = e
        elif target is not None:
            e.target = target
        e.last_seen = self.clock()
        return e

    def reward(self, episode_id: str, reward: float) -> EpisodeState:
        e = self.episodes.get(episode_id)
        if e is None:
            raise RequestError("episode_id", f"episode {episode_id!r} is unknown or expired; "
                               "start it with POST /v1/act", status=404)
        e.earned += reward
        e.last_seen = self.clock()
        return e


# --- the service -----------------------------------------------------------------------------

class PolicyService:
    """Acts for batches of requests with one LLM policy (built from an ``hf://`` URI) and keeps
    the episodes' state. Engine calls are serialised by a lock, so threads may share it."""

    def __init__(self, policy_uri: str, env_id: str = "CartPole-v1",
                 env_options: dict | None = None, episode_ttl_s: float = 600.0):
        from policylm.platform.envs import make_adapter
        from policylm.platform.policies import PolicyError, policy_from_uri, split_uri
        from policylm.platform.policies.llm import LLMPolicy

        self.uri, self.env_id = policy_uri, env_id
        self.adapter: EnvAdapter = make_adapter(env_id, **(env_options or {}))
        scheme, body, params = split_uri(policy_uri)
        policy = policy_from_uri(policy_uri, self.adapter)
        if not isinstance(policy, LLMPolicy):
            raise PolicyError(f"policy URI {policy_uri!r}: the server serves LLM policies "
                              f"(hf://...), not {scheme}:")
        self.policy, self.model, self.adapter_dir = policy, body, params.get("adapter", "")
        self.default_target = policy.cfg.target_return
        self.store = EpisodeStore(episode_ttl_s)
        self.lock = threading.Lock()
        self.stateless_rng = np.random.default_rng(0)

    def info(self) -> dict:
        """What ``GET /v1/policy`` returns."""
        p = self.policy
        return {"policy": self.uri, "base_model": self.model, "adapter": self.adapter_dir or None,
                "env_id": self.env_id, "engine": p.engine.name, "prompt_form": p.form,
                "prompt_template_version": PROMPT_TEMPLATE_VERSION, "mode": p.cfg.mode,
                "temperature": p.cfg.temperature, "adaptive": p.cfg.adaptive,
                "default_target_return": self.default_target,
                "valid_actions": self.adapter.codec.valid_actions,
                "open_episodes": len(self.store.episodes)}

    def _texts(self, req: ActRequest, index: int) -> list[str]:
        if req.texts is not None:
            return list(req.texts)
        space = self.adapter.observation_space
        try:
            return [self.adapter.encode(from_json(space, o,
                                                  f"requests[{index}].observations[{i}]"))
                    for i, o in enumerate(req.observations or [])]
        except SpaceValueError as err:
            raise RequestError(err.field, err.reason) from err

    def act(self, requests: Sequence[ActRequest]) -> list[ActResponse | RequestError]:
        """One engine call for every observation of every request; a request that does not fit
        gets its :class:`RequestError` in its place and does not fail the others."""
        rows: list[tuple[int, str, float, int, np.random.Generator, str | None]] = []
        results: list[Any] = [None] * len(requests)
        with self.lock:
            self.store.expire()
            for i, req in enumerate(requests):
                try:
                    rows += self._rows(req, i)
                except RequestError as err:
                    results[i] = err
            if rows:
                decisions = self.policy.decide([r[1] for r in rows], [r[2] for r in rows],
                                               [r[3] for r in rows], [r[4] for r in rows])
            else:
                decisions = []
        names = self.adapter.codec.valid_actions or []
        for (i, _, target, t, _, episode), d in zip(rows, decisions, strict=True):
            if results[i] is None:
                results[i] = ActResponse(actions=[])
            scores = dict(zip(names, d.scores, strict=True)) if d.scores is not None else None
            results[i].actions.append(ActionOut(action=to_json(d.action), text=d.text,
                                                target_return=target, step=t, episode_id=episode,
                                                scores=scores, valid=d.valid))
        return results

    def _rows(self, req: ActRequest, index: int) -> list[tuple]:
        texts = self._texts(req, index)
        n = len(texts)
        targets = req.target_return if isinstance(req.target_return, list) else \
            [req.target_return] * n
        rows = []
        for j, text in enumerate(texts):
            if req.episode_ids is None:
                target = self.default_target if targets[j] is None else targets[j]
                t = req.steps[j] if req.steps is not None else 0
                rows.append((index, text, round(target, 2), t, self.stateless_rng, None))
                continue
            eid = req.episode_ids[j]
            e = self.store.get(eid, targets[j], self.default_target)
            if req.rewards is not None:
                e.earned += req.rewards[j]
            target = e.target - (e.earned if self.policy.cfg.adaptive else 0.0)
            rows.append((index, text, round(target, 2), e.t, e.rng, eid))
            e.t += 1
        return rows

    def reward(self, episode_id: str, reward: float) -> EpisodeOut:
        with self.lock:
            e = self.store.reward(episode_id, reward)
            return self._episode(episode_id, e)

    def end(self, episode_id: str) -> EpisodeOut:
        with self.lock:
            e = self.store.episodes.pop(episode_id, None)
            if e is None:
                raise RequestError("episode_id", f"episode {episode_id!r} is unknown or expired",
                                   status=404)
            return self._episode(episode_id, e)

    def _episode(self, episode_id: str, e: EpisodeState) -> EpisodeOut:
        return EpisodeOut(episode_id=episode_id, step=e.t, target_return=e.target,
                          earned=e.earned, remaining_target=e.target - e.earned)

    def chat(self, requests: Sequence[ChatRequest]) -> list[dict]:
        """OpenAI chat completions: every choice of every request in one ``generate`` call per
        temperature (the engine samples a batch at one temperature)."""
        engine = self.policy.engine
        prompts = [engine.chat_messages([m.model_dump() for m in r.messages]) for r in requests]
        jobs = [(i, r) for i, r in enumerate(requests) for _ in range(r.n)]  # one per choice
        texts: list[str] = [""] * len(jobs)
        with self.lock:
            for temperature, max_tokens in sorted({(r.temperature, r.max_tokens)
                                                   for _, r in jobs}):
                idx = [k for k, (_, r) in enumerate(jobs)
                       if (r.temperature, r.max_tokens) == (temperature, max_tokens)]
                seed = next((jobs[k][1].seed for k in idx if jobs[k][1].seed is not None), None)
                out = engine.generate([prompts[jobs[k][0]] for k in idx], max_tokens,
                                      temperature, seed=seed)
                for k, text in zip(idx, out, strict=True):
                    texts[k] = text
        created = int(time.time())
        responses = []
        for i, r in enumerate(requests):
            mine = [texts[k] for k, (j, _) in enumerate(jobs) if j == i]
            prompt_tokens = len(engine.encode(prompts[i]))
            # tokens of the returned text (special tokens and end of turn are not counted)
            completion_tokens = sum(len(engine.encode(t)) for t in mine)
            responses.append({
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": created, "model": r.model or self.model,
                "choices": [{"index": c, "message": {"role": "assistant", "content": t},
                             "finish_reason": "stop", "logprobs": None}
                            for c, t in enumerate(mine)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}})
        return responses
