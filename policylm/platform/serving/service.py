"""The policy service behind the HTTP API: batched acting with one LLM policy, episode state
through a store (:mod:`policylm.platform.serving.episodes`), chat completions, and the limits
that keep one client from stalling the others.

Acting (``POST /v1/act``): each observation (raw, in the env's observation space as JSON, or
already text) becomes one prompt row; the rows of all requests in a batch go to the engine
together, at most ``max_rows_per_call`` rows per call, taking the engine lock per call so that
other batches get their turn between the calls of a large request. With an ``episode_id`` the
store keeps the episode's target, the reward earned so far and the step: the prompt's target is
``target - earned`` (when adaptive) and the step counts up by one per call. Without one, a call
is stateless (``steps`` or 0, the given or default target).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policylm.platform.engines.contract import derived_seed
from policylm.platform.envs import EnvAdapter
from policylm.platform.envs.spaces import SpaceValueError, from_json, to_json
from policylm.platform.prompts import PROMPT_TEMPLATE_VERSION
from policylm.platform.serving.episodes import EpisodeStore
from policylm.platform.serving.schemas import (
    ActionOut,
    ActRequest,
    ActResponse,
    ChatRequest,
    EpisodeOut,
    RequestError,
)


@dataclass
class ServiceLimits:
    """What one request may ask of a replica. Over a limit: 413 (too many observations) or 422
    (too long a prompt, too many tokens to generate), naming the limit."""

    max_observations: int = 256     # observations (or texts) per act request
    max_prompt_tokens: int = 1024   # tokens of one prompt (act row or chat conversation)
    max_new_tokens: int = 256       # tokens generated per chat choice
    max_rows_per_call: int = 64     # prompt rows per engine call (a large request is split)


class PolicyService:
    """Acts for batches of requests with one LLM policy (built from an ``hf://`` URI); episode
    state lives in ``store`` (an :class:`EpisodeStore`, or anything with its ``advance``,
    ``reward``, ``end`` and ``count``, such as a handle to the store every replica shares).
    Engine calls are serialised by a lock, so threads may share the service."""

    def __init__(self, policy_uri: str, env_id: str = "CartPole-v1",
                 env_options: dict | None = None, episode_ttl_s: float = 600.0,
                 store: Any = None, limits: ServiceLimits | None = None):
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
        self.store = store if store is not None else EpisodeStore(episode_ttl_s)
        self.limits = limits or ServiceLimits()
        self.lock = threading.Lock()
        self.stateless_rng = np.random.default_rng(0)

    def info(self) -> dict:
        """What ``GET /v1/policy`` returns (the server adds the open episodes)."""
        p = self.policy
        return {"policy": self.uri, "base_model": self.model, "adapter": self.adapter_dir or None,
                "env_id": self.env_id, "engine": p.engine.name, "prompt_form": p.form,
                "prompt_template_version": PROMPT_TEMPLATE_VERSION, "mode": p.cfg.mode,
                "temperature": p.cfg.temperature, "adaptive": p.cfg.adaptive,
                "default_target_return": self.default_target,
                "valid_actions": self.adapter.codec.valid_actions,
                "limits": vars(self.limits)}

    # --- acting ----------------------------------------------------------------------------

    def check_size(self, req: ActRequest) -> None:
        """413 when a request carries more observations than ``max_observations``."""
        if req.size() > self.limits.max_observations:
            raise RequestError("observations", f"{req.size()} observations in one request; the "
                               f"limit is {self.limits.max_observations} (max_observations): "
                               "send them in several requests", status=413)

    def _texts(self, req: ActRequest, index: int) -> list[str]:
        self.check_size(req)
        if self.policy.cfg.history and req.episode_ids is None:
            raise RequestError("episode_ids", f"this policy acts with history="
                               f"{self.policy.cfg.history} (the episode's earlier steps in its "
                               "prompt); send episode_ids, so the server keeps each episode's "
                               "steps")
        if req.texts is not None:
            texts = list(req.texts)
        else:
            space = self.adapter.observation_space
            try:
                texts = [self.adapter.encode(from_json(space, o,
                                                       f"requests[{index}].observations[{i}]"))
                         for i, o in enumerate(req.observations or [])]
            except SpaceValueError as err:
                raise RequestError(err.field, err.reason) from err
        engine, limit = self.policy.engine, self.limits.max_prompt_tokens
        for i, text in enumerate(texts):
            n = len(engine.encode(text))
            if n > limit:
                raise RequestError(f"requests[{index}].observations[{i}]",
                                   f"the observation text is {n} tokens; prompts are limited to "
                                   f"{limit} tokens (max_prompt_tokens)")
        return texts

    def act(self, requests: Sequence[ActRequest]) -> list[ActResponse | RequestError]:
        """Actions for every observation of every request; a request that does not fit gets
        its :class:`RequestError` in its place and does not fail the others."""
        results: list[Any] = [None] * len(requests)
        parsed: list[tuple[int, ActRequest, list[str]]] = []
        for i, req in enumerate(requests):
            try:
                parsed.append((i, req, self._texts(req, i)))
            except RequestError as err:
                results[i] = err
        updates = [(req.episode_ids[j], self._target(req, j),
                    req.rewards[j] if req.rewards is not None else 0.0)
                   for _, req, texts in parsed if req.episode_ids is not None
                   for j in range(len(texts))]
        history = self.policy.cfg.history
        states = iter(self.store.advance(updates, self.default_target, history)
                      if updates else [])
        rows: list[tuple[int, str, float, int, np.random.Generator, str | None, list]] = []
        for i, req, texts in parsed:
            for j, text in enumerate(texts):
                if req.episode_ids is None:
                    target = self._target(req, j)
                    target = self.default_target if target is None else target
                    t = req.steps[j] if req.steps is not None else 0
                    rows.append((i, text, round(target, 2), t, self.stateless_rng, None, []))
                    continue
                s = next(states)
                target = s["target"] - (s["earned"] if self.policy.cfg.adaptive else 0.0)
                rows.append((i, text, round(target, 2), s["t"], np.random.default_rng(s["seed"]),
                             req.episode_ids[j], [tuple(p) for p in s["past"]]))
        decisions = []
        step = self.limits.max_rows_per_call
        for lo in range(0, len(rows), step):  # the lock per call: other batches interleave
            part = rows[lo: lo + step]
            with self.lock:
                decisions += self.policy.decide([r[1] for r in part], [r[2] for r in part],
                                                [r[3] for r in part], [r[4] for r in part],
                                                [r[6] for r in part], [r[5] for r in part])
        if history:
            self.store.remember([(episode, [target, t, text, d.text])
                                 for (_, text, target, t, _, episode, _), d
                                 in zip(rows, decisions, strict=True)])
        names = self.adapter.codec.valid_actions or []
        for (i, _, target, t, _, episode, _), d in zip(rows, decisions, strict=True):
            if results[i] is None:
                results[i] = ActResponse(actions=[])
            scores = dict(zip(names, d.scores, strict=True)) if d.scores is not None else None
            results[i].actions.append(ActionOut(action=to_json(d.action), text=d.text,
                                                target_return=target, step=t, episode_id=episode,
                                                scores=scores, valid=d.valid,
                                                thought=d.thought))
        return results

    @staticmethod
    def _target(req: ActRequest, j: int) -> float | None:
        return req.target_return[j] if isinstance(req.target_return, list) else \
            req.target_return

    def reward(self, episode_id: str, reward: float) -> EpisodeOut:
        return EpisodeOut(**self.store.reward(episode_id, reward))

    def end(self, episode_id: str) -> EpisodeOut:
        return EpisodeOut(**self.store.end(episode_id))

    # --- chat ------------------------------------------------------------------------------

    def check_chat(self, req: ChatRequest) -> str:
        """The request's prompt, after checking it against the limits (422 naming them)."""
        if req.max_tokens > self.limits.max_new_tokens:
            raise RequestError("max_tokens", f"{req.max_tokens} tokens asked for; the limit is "
                               f"{self.limits.max_new_tokens} (max_new_tokens)")
        engine = self.policy.engine
        prompt = engine.chat_messages([m.model_dump() for m in req.messages])
        n = len(engine.encode(prompt))
        if n > self.limits.max_prompt_tokens:
            raise RequestError("messages", f"the conversation is {n} tokens; prompts are "
                               f"limited to {self.limits.max_prompt_tokens} tokens "
                               "(max_prompt_tokens)")
        return prompt

    def chat(self, requests: Sequence[ChatRequest]) -> list[dict | RequestError]:
        """OpenAI chat completions: every choice of every request in one ``generate`` call per
        (temperature, max_tokens); a request over a limit gets its :class:`RequestError`.
        ``finish_reason`` and ``usage`` count the generated tokens (the end of turn included);
        with a ``seed``, choice c samples from its own stream, ``(seed, c)``, whatever else is
        in the call."""
        engine = self.policy.engine
        prompts: dict[int, str] = {}
        results: list[Any] = [None] * len(requests)
        for i, r in enumerate(requests):
            try:
                prompts[i] = self.check_chat(r)
            except RequestError as err:
                results[i] = err
        jobs = [(i, requests[i], c) for i in prompts for c in range(requests[i].n)]
        done: list[Any] = [None] * len(jobs)
        with self.lock:
            for temperature, max_tokens in sorted({(r.temperature, r.max_tokens)
                                                   for _, r, _ in jobs}):
                idx = [k for k, (_, r, _) in enumerate(jobs)
                       if (r.temperature, r.max_tokens) == (temperature, max_tokens)]
                seeds = [None if jobs[k][1].seed is None else
                         derived_seed(jobs[k][1].seed, jobs[k][2]) for k in idx]
                out = engine.generate_details([prompts[jobs[k][0]] for k in idx], max_tokens,
                                              temperature, seeds=seeds)
                for k, generation in zip(idx, out, strict=True):
                    done[k] = generation
        created = int(time.time())
        for i in prompts:
            r = requests[i]
            mine = [done[k] for k, (j, _, _) in enumerate(jobs) if j == i]
            prompt_tokens = len(engine.encode(prompts[i]))
            generated = sum(len(g.token_ids) for g in mine)
            results[i] = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": created, "model": r.model or self.model,
                # "length": generation stopped at max_tokens, not at the end of its turn
                "choices": [{"index": c, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": g.finish_reason, "logprobs": None}
                            for c, g in enumerate(mine)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                          "total_tokens": prompt_tokens + generated}}
        return results
