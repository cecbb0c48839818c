"""The policy service behind the HTTP API: batched acting with one LLM policy, episode state
through a store (:mod:`policylm.platform.serving.episodes`), chat completions, and the limits
that keep one client from stalling the others.

Acting (``POST /v1/act``): each observation (raw, in the env's observation space as JSON, or
already text) becomes one prompt row; the rows of all requests in a batch go to the engine
together, at most ``max_rows_per_call`` rows per call, taking the engine lock per call so that
other batches get their turn between the calls of a large request. With an ``episode_id`` the
store keeps the episode's target, the reward earned so far and the step: the prompt's target is
``target - earned`` (when adaptive) and the step counts up by one per call, recorded only once
the answer exists, so a retry of the same step (``steps``) is idempotent. Without one, a call is
stateless (``steps`` or 0, the given or default target).

A request's ``deadline`` (the server's ``request_timeout_s``) is checked before each engine call
of it: past it, the replica stops there (504) instead of computing an answer nobody waits for.
``max_prompt_tokens`` counts the whole prompt (system text, few-shot examples, history window,
observation), as the policy renders it. Every use of the engine's tokenizer holds the engine
lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policylm.platform.engines.contract import derived_seed
from policylm.platform.envs import EnvAdapter
from policylm.platform.envs.spaces import SpaceValueError, from_json, to_json
from policylm.platform.prompts import PROMPT_TEMPLATE_VERSION, prompt_target
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


@dataclass
class Row:
    """One observation of an act request on its way to the engine: where it came from, its
    prompt's parts, its random stream and, with an episode, the store's state for the commit."""

    request: int          # the request's index in the batch
    index: int            # the observation's index in its request
    text: str             # the observation text
    target: float         # the target written in the prompt
    t: int                # the step written in the prompt
    rng: np.random.Generator
    episode: str | None = None
    past: list = field(default_factory=list)  # earlier steps in the prompt's window
    state: dict | None = None                 # the store's row (EpisodeStore.begin)
    reward: float = 0.0                       # reward sent with the call

    def decide_args(self) -> tuple:
        """The row as :meth:`LLMPolicy.decide` takes it (one entry of each of its lists)."""
        return self.text, self.target, self.t, self.rng, self.past, self.episode


class PolicyService:
    """Acts for batches of requests with one LLM policy (built from an ``hf://`` URI); episode
    state lives in ``store`` (an :class:`EpisodeStore`, or anything with its ``begin``,
    ``commit``, ``reward``, ``end`` and ``count``, such as a handle to the store every replica
    shares). Engine calls are serialised by a lock, so threads may share the service."""

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
        # a history window is trimmed to the limit before any prompt is refused for it
        policy.max_prompt_tokens = self.limits.max_prompt_tokens
        # engine calls and every use of the engine's tokenizer (a fast tokenizer refuses a
        # second thread: "Already borrowed"); re-entrant, for the helpers that take it
        self.lock = threading.RLock()
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
            return list(req.texts)
        space = self.adapter.observation_space
        try:
            return [self.adapter.encode(from_json(space, o, f"requests[{index}].observations[{i}]"))
                    for i, o in enumerate(req.observations or [])]
        except SpaceValueError as err:
            raise RequestError(err.field, err.reason) from err

    def act(self, requests: Sequence[ActRequest], deadlines: Sequence[float | None] | None = None
            ) -> list[ActResponse | RequestError]:
        """Actions for every observation of every request; a request that does not fit gets
        its :class:`RequestError` in its place and does not fail the others. ``deadlines``: per
        request, a ``time.monotonic()`` time after which none of its engine calls start (it
        gets a 504 error, and none of its episodes move on). Episodes move on only once every
        answer of their request exists (see :mod:`policylm.platform.serving.episodes`)."""
        ends = list(deadlines) if deadlines is not None else [None] * len(requests)
        results: list[Any] = [None] * len(requests)
        parsed: list[tuple[int, ActRequest, list[str]]] = []
        for i, req in enumerate(requests):
            try:
                parsed.append((i, req, self._texts(req, i)))
            except RequestError as err:
                results[i] = err
        rows = self._rows(parsed, results)
        decisions: list[Any] = [None] * len(rows)
        step = self.limits.max_rows_per_call
        for lo in range(0, len(rows), step):  # the lock per call: other batches interleave
            part = [k for k in range(lo, min(lo + step, len(rows)))
                    if results[rows[k].request] is None]
            held = bool(part) and self._take_lock([ends[rows[k].request] for k in part])
            try:  # not held: the lock came past every deadline of the part, which is late
                part = [k for k in part if not self._late(rows[k].request, ends, results)]
                part = self._fitting(rows, part, results) if held else []  # same turn of it
                if part:
                    got = self.policy.decide(*zip(*[rows[k].decide_args() for k in part],
                                                  strict=True))
                    for k, d in zip(part, got, strict=True):
                        decisions[k] = d
            finally:
                if held:
                    self.lock.release()
        for r in rows:  # work that finished past its deadline is not kept either
            self._late(r.request, ends, results)
        rows_done = [(r, d) for r, d in zip(rows, decisions, strict=True)
                     if results[r.request] is None]
        history = self.policy.cfg.history
        commits = [(r.episode, r.t, r.reward, r.state["target"], r.state["earned"],
                    [r.target, r.t, r.text, d.text] if history else None)
                   for r, d in rows_done if r.episode is not None and not r.state["repeat"]]
        if commits:
            self.store.commit(commits, history)
        names = self.adapter.codec.valid_actions or []
        for r, _ in rows_done:
            if results[r.request] is None:
                results[r.request] = ActResponse(actions=[])
        for r, d in rows_done:
            scores = dict(zip(names, d.scores, strict=True)) if d.scores is not None else None
            results[r.request].actions.append(ActionOut(
                action=to_json(d.action), text=d.text, target_return=r.target, step=r.t,
                episode_id=r.episode, scores=scores, valid=d.valid, thought=d.thought))
        return results

    def _rows(self, parsed: list[tuple[int, ActRequest, list[str]]], results: list[Any]
              ) -> list[Row]:
        """One row per observation, with its episode's state from the store (read, not
        changed); a request with an episode the store refuses (404, 409) gets that error."""
        updates = [(req.episode_ids[j], self._target(req, j),
                    req.rewards[j] if req.rewards is not None else 0.0,
                    req.steps[j] if req.steps is not None else None)
                   for _, req, texts in parsed if req.episode_ids is not None
                   for j in range(len(texts))]
        history = self.policy.cfg.history
        got = self.store.begin(updates, self.default_target, history) if updates else \
            {"rows": [], "expired": []}
        self.forget(got["expired"])
        states = iter(got["rows"])
        rows: list[Row] = []
        for i, req, texts in parsed:
            mine = []
            for j, text in enumerate(texts):
                if req.episode_ids is None:
                    target = self._target(req, j)
                    target = self.default_target if target is None else target
                    t = req.steps[j] if req.steps is not None else 0
                    mine.append(Row(i, j, text, prompt_target(target, 0.0), t,
                                    self.stateless_rng))
                    continue
                s = next(states)
                if "error" in s:
                    if results[i] is None:
                        status, message = s["error"]
                        results[i] = RequestError(f"requests[{i}].episode_ids[{j}]", message,
                                                  status=status)
                    continue
                target = prompt_target(s["target"], s["earned"], self.policy.cfg.adaptive)
                mine.append(Row(i, j, text, target, s["t"],
                                np.random.default_rng(s["seed"]), req.episode_ids[j],
                                [tuple(p) for p in s["past"]], s,
                                req.rewards[j] if req.rewards is not None else 0.0))
            if results[i] is None:
                rows += mine
        return rows

    def _fitting(self, rows: list[Row], part: list[int], results: list[Any]) -> list[int]:
        """The rows of ``part`` whose whole prompt (as the policy renders it) fits
        ``max_prompt_tokens``; a request with a longer one gets 422. Called holding the lock
        (the tokenizer is the engine's: one thread at a time)."""
        limit = self.limits.max_prompt_tokens
        got = [rows[k] for k in part]
        prompts, _ = self.policy.render([r.text for r in got], [r.target for r in got],
                                        [r.t for r in got], [r.past for r in got])
        for r, prompt in zip(got, prompts, strict=True):
            n = len(self.policy.engine.encode(prompt))
            if n > limit and results[r.request] is None:
                results[r.request] = RequestError(
                    f"requests[{r.request}].observations[{r.index}]",
                    f"the prompt is {n} tokens (the system text, any few-shot examples, the "
                    "history window and the observation); prompts are limited to "
                    f"{limit} tokens (max_prompt_tokens): send a shorter observation, or raise "
                    "max_prompt_tokens")
        return [k for k in part if results[rows[k].request] is None]

    def _take_lock(self, ends: list[float | None]) -> bool:
        """The engine lock, waiting at most until the latest of ``ends`` (no deadline: as long
        as it takes); False when it was not taken."""
        if any(e is None for e in ends):
            return self.lock.acquire()
        return self.lock.acquire(timeout=max(0.0, max(e for e in ends if e is not None)
                                             - time.monotonic()))

    @staticmethod
    def _late(i: int, ends: list[float | None], results: list[Any]) -> bool:
        """Whether request ``i`` is past its deadline (it then gets its 504 error)."""
        if results[i] is None and ends[i] is not None and time.monotonic() >= ends[i]:
            results[i] = RequestError(
                "request", "it ran past its deadline (request_timeout_s); the server stopped "
                "its work there and kept nothing of it (no episode moved on): retry it (the "
                "same steps and rewards), or send fewer observations per request", status=504)
        return isinstance(results[i], RequestError) and results[i].status == 504

    @staticmethod
    def _target(req: ActRequest, j: int) -> float | None:
        return req.target_return[j] if isinstance(req.target_return, list) else \
            req.target_return

    def reward(self, episode_id: str, reward: float) -> EpisodeOut:
        return EpisodeOut(**self.store.reward(episode_id, reward))

    def end(self, episode_id: str) -> EpisodeOut:
        out = EpisodeOut(**self.store.end(episode_id))
        self.forget([episode_id])
        return out

    def forget(self, episode_ids: Sequence[str]) -> None:
        """Free the engine's cached prompts of ended or expired episodes (this replica's; the
        engine's byte budget bounds what other replicas keep)."""
        if episode_ids and self.policy.cfg.history:
            with self.lock:
                for episode_id in episode_ids:
                    self.policy.end_session(episode_id)

    def tokens(self, text: str) -> int:
        """Tokens of ``text`` (under the engine lock: the tokenizer is the engine's)."""
        with self.lock:
            return len(self.policy.engine.encode(text))

    # --- chat ------------------------------------------------------------------------------

    def check_chat(self, req: ChatRequest) -> str:
        """The request's prompt, after checking it against the limits (422 naming them)."""
        if req.max_tokens > self.limits.max_new_tokens:
            raise RequestError("max_tokens", f"{req.max_tokens} tokens asked for; the limit is "
                               f"{self.limits.max_new_tokens} (max_new_tokens)")
        engine = self.policy.engine
        prompt = engine.template.render([m.model_dump() for m in req.messages])
        n = self.tokens(prompt)
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
            prompt_tokens = self.tokens(prompts[i])
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
