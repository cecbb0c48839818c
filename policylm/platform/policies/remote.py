"""Policies that act through a server: ``http://`` (a running policylm Serve endpoint) and
``openai://`` (any OpenAI-compatible chat server: vLLM, Ray Serve LLM, this project's app).

- ``http://host:port[/prefix]?target_return=R&text=0&timeout=30&wait=60&retries=2``: before
  its first step the policy waits up to ``wait`` seconds for the server's ``GET /v1/health`` (a
  server started a moment ago takes ~20 s to come up); then each step is one
  ``POST /v1/act`` with every slot's raw observation (``text=1``: the encoded text), the slot's
  episode id, the step it is at and the reward earned since its previous step, so the server
  keeps the adaptive target. A call that gets 500, 503 or 504 or no answer is sent again as it
  was, up to ``retries`` times (the server counts a retried step once); an episode the server
  lost (404) or whose step it disputes (409) raises :class:`RemoteError` saying so. The API key
  comes from ``POLICYLM_API_KEY`` (never from the URI, which is stored with the
  trajectories).
- ``openai://host:port/v1?model=<name>&target_return=R&temperature=..``: the LLM policy in
  generate mode over ``POST /v1/chat/completions`` (chat prompt form), parsing the answer with
  the action codec and counting invalid answers (``fallback``). Key: ``OPENAI_API_KEY``, else
  ``POLICYLM_API_KEY``. The prompts of a step are sent concurrently so the server can batch.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from policylm.platform.envs import EnvAdapter
from policylm.platform.policy import Policy
from policylm.platform.prompts import ChatTemplate


class RemoteError(RuntimeError):
    """A server that cannot be reached or refused a request; the message says which and why
    (``status``: the HTTP status, None without an answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def post_json(url: str, body: Any, key: str = "", timeout: float = 60.0,
              method: str = "POST") -> Any:
    """Send JSON, return the decoded JSON answer; :class:`RemoteError` naming the URL, the
    status and the server's ``detail`` on failure."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:500]
        hint = " (set POLICYLM_API_KEY to the server's key)" if err.code == 401 else ""
        raise RemoteError(f"{method} {url} -> HTTP {err.code}: {detail}{hint}",
                          err.code) from err
    except (urllib.error.URLError, OSError) as err:
        raise RemoteError(f"{method} {url}: no answer ({err}); is the server running? "
                          "(policylm serve policy=hf://...)") from err


def wait_for_health(base: str, seconds: float) -> None:
    """Return once ``GET <base>/v1/health`` answers; :class:`RemoteError` naming the URL and
    the wait after ``seconds`` without an answer."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            post_json(f"{base}/v1/health", None, timeout=5, method="GET")
            return
        except RemoteError as err:
            if time.monotonic() >= deadline:
                raise RemoteError(f"{err} (waited {seconds:g} s; raise wait= in the URI for a "
                                  "server that starts slowly)") from err.__cause__
            time.sleep(0.5)


class HTTPPolicy(Policy):
    """Acts through a policylm Serve endpoint (see module docstring)."""

    def __init__(self, adapter: EnvAdapter, base_url: str, target_return: float | None = None,
                 send_text: bool = False, timeout: float = 60.0, wait: float = 60.0,
                 retries: int = 2):
        self.adapter, self.base = adapter, base_url.rstrip("/")
        self.target, self.send_text, self.timeout = target_return, send_text, timeout
        self.wait, self.ready, self.retries = wait, False, retries
        self.key = os.environ.get("POLICYLM_API_KEY", "")
        self.episodes: dict[int, str] = {}
        self.pending: dict[int, float] = {}
        self.steps: dict[int, int] = {}  # slot -> the step its episode is at (calls answered)
        self.counts = {"actions": 0, "invalid": 0}
        self.targets: list[float | None] = []  # the last act()'s, in slot order

    def reset(self, slot: int, seed: int) -> None:
        if self.steps.get(slot):  # the slot's last episode ended: the server may free it now
            self.end(self.episodes[slot])
        self.episodes[slot] = f"{uuid.uuid4().hex}-{seed}"
        self.pending[slot] = 0.0
        self.steps[slot] = 0

    def observe(self, slots: Sequence[int], rewards: Sequence[float]) -> None:
        for s, r in zip(slots, rewards, strict=True):
            self.pending[s] = self.pending.get(s, 0.0) + float(r)

    def end(self, episode_id: str) -> bool:
        """``DELETE`` an ended episode, so the server frees its state and cached prompts now
        rather than at its TTL; best effort (an episode the server no longer knows, or no
        answer, changes nothing here). Whether the server answered."""
        from urllib.parse import quote

        try:
            post_json(f"{self.base}/v1/episodes/{quote(episode_id, safe='')}", None, self.key,
                      min(self.timeout, 5.0), method="DELETE")
            return True
        except RemoteError:
            return False

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        from policylm.platform.envs.spaces import from_json, to_json

        if not self.ready:
            wait_for_health(self.base, self.wait)
            self.ready = True
        for s in slots:
            if s not in self.episodes:
                self.reset(s, s)
        body: dict[str, Any] = {
            "episode_ids": [self.episodes[s] for s in slots],
            "rewards": [self.pending.get(s, 0.0) for s in slots],
            "steps": [self.steps[s] for s in slots],  # a retried call is the same step
        }
        if self.send_text:
            body["texts"] = [self.adapter.encode(o) for o in observations]
        else:
            body["observations"] = [to_json(o) for o in observations]
        if self.target is not None:  # the episode's target, set on its first call
            body["target_return"] = [None if self.steps[s] else self.target for s in slots]
        out = self._post_act(body)
        for s in slots:
            self.pending[s] = 0.0
            self.steps[s] += 1
        actions = out["actions"]
        # the target each prompt was written with, as the server reports it
        self.targets = [a.get("target_return") for a in actions]
        self.counts["actions"] += len(actions)
        self.counts["invalid"] += sum(not a.get("valid", True) for a in actions)
        space = self.adapter.action_space
        return [from_json(space, a["action"], "action") for a in actions]

    def _post_act(self, body: dict) -> Any:
        """``POST /v1/act``, sent again as it was after 500, 503, 504 or no answer (up to
        ``retries`` times); a lost (404) or disputed (409) episode is a :class:`RemoteError`
        that says what happened."""
        import time

        attempt = 0
        while True:
            try:
                return post_json(f"{self.base}/v1/act", body, self.key, self.timeout)
            except RemoteError as err:
                if err.status == 404:
                    raise RemoteError(f"{err} -- the server no longer knows an episode of this "
                                      "rollout (its episode store restarted, or the episode was "
                                      "idle past the server's episode_ttl_s): its adaptive "
                                      "target and history are lost; run the episodes again",
                                      404) from err
                if err.status == 409:
                    raise RemoteError(f"{err} -- the server's step of an episode of this "
                                      "rollout is not this policy's (is a second client using "
                                      "its episode ids?)", 409) from err
                if err.status not in (None, 500, 503, 504) or attempt >= self.retries:
                    raise
                time.sleep(0.5 * 2**attempt)
                attempt += 1

    def stats(self) -> dict[str, float]:
        n = self.counts["actions"]
        return {**self.counts, "invalid_rate": self.counts["invalid"] / n if n else None}


class MessagesAsJSON(ChatTemplate):
    """The template of a chat server: a conversation as its JSON message list (the server
    applies the model's template); no prefix to cache on this side."""

    def __init__(self) -> None:
        super().__init__(None)

    def render(self, messages: Sequence[dict]) -> str:
        return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages])

    def prefix(self, system: str) -> str:
        return ""


class OpenAIEngine:
    """The generate half of the engine contract over an OpenAI-compatible chat server. Chat
    prompts are carried as JSON message lists (:class:`MessagesAsJSON`) and sent as ``messages``;
    scoring is not offered (chat servers return no prompt log-probabilities)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, timeout: float = 60.0, concurrency: int = 16):
        self.base, self.model = base_url.rstrip("/"), model
        self.timeout, self.concurrency = timeout, concurrency
        self.key = os.environ.get("OPENAI_API_KEY") or os.environ.get("POLICYLM_API_KEY", "")
        self.template = MessagesAsJSON()

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError("openai engine: no tokenizer on the client side")

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
              prefix: str | None = None, sessions: Sequence[Hashable] | None = None
              ) -> list[np.ndarray]:
        from policylm.platform.engines import EngineError

        raise EngineError("openai:// cannot score actions (chat servers return no prompt "
                          "log-probabilities); it acts with mode=generate")

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16,
                 temperature: float = 0.0, seed: int | None = None,
                 seeds: Sequence[int | None] | None = None) -> list[str]:
        """One request per prompt; each sends its row's seed (``seeds[i]``, or one derived from
        ``(seed, i)``), for servers that sample per request seed."""
        from policylm.platform.engines.contract import derived_seed

        row = list(seeds) if seeds is not None else \
            [None if seed is None else derived_seed(seed, i) for i in range(len(prompts))]

        def one(prompt: str, row_seed: int | None) -> str:
            try:
                messages = json.loads(prompt)
            except json.JSONDecodeError:
                messages = [{"role": "user", "content": prompt}]
            body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                    "temperature": temperature, "n": 1}
            if row_seed is not None:
                body["seed"] = row_seed
            out = post_json(f"{self.base}/chat/completions", body, self.key, self.timeout)
            return (out["choices"][0]["message"].get("content") or "").strip()

        if len(prompts) == 1:
            return [one(prompts[0], row[0])]
        with ThreadPoolExecutor(min(len(prompts), self.concurrency)) as pool:
            return list(pool.map(one, prompts, row))


def http_policy(body: str, params: dict[str, str], adapter: EnvAdapter,
                scheme: str = "http") -> HTTPPolicy:
    """``http://<body>?target_return=R&text=0|1&timeout=S&wait=S&retries=N``."""
    known = {"target_return", "text", "timeout", "wait", "retries"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown {scheme}:// parameters {sorted(unknown)}; known: "
                         f"{sorted(known)} (the API key comes from POLICYLM_API_KEY)")
    target = float(params["target_return"]) if "target_return" in params else None
    return HTTPPolicy(adapter, f"{scheme}://{body}", target,
                      params.get("text", "0").lower() in ("1", "true", "yes"),
                      float(params.get("timeout", 60)), float(params.get("wait", 60)),
                      int(params.get("retries", 2)))


def openai_policy(body: str, params: dict[str, str], adapter: EnvAdapter) -> Any:
    """``openai://host:port/v1?model=<name>&target_return=R&temperature=T&max_new_tokens=N
    &fallback=first|random&adaptive=1&https=0&think=1&think_tokens=N``: the LLM policy in
    generate mode (``think=1``: think mode, a short reasoning text then ``Action: <action>``)."""
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    known = {"model", "target_return", "adaptive", "temperature", "max_new_tokens", "fallback",
             "https", "timeout", "think", "think_tokens"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown openai:// parameters {sorted(unknown)}; known: "
                         f"{sorted(known)}")
    if "model" not in params:
        raise ValueError("openai:// needs ?model=<name> (the server's model id)")
    proto = "https" if params.get("https", "0").lower() in ("1", "true", "yes") else "http"
    engine = OpenAIEngine(f"{proto}://{body}", params["model"],
                          float(params.get("timeout", 60)))
    cfg = LLMPolicyConfig(
        target_return=float(params.get("target_return", 0.0)),
        adaptive=params.get("adaptive", "1").lower() in ("1", "true", "yes"),
        mode="think" if params.get("think", "0").lower() in ("1", "true", "yes") else "generate",
        temperature=float(params.get("temperature", 0.0)),
        max_new_tokens=int(params.get("max_new_tokens", 16)),
        think_tokens=int(params.get("think_tokens", 256)),
        fallback=params.get("fallback", "first"), prompt_form="chat")
    return LLMPolicy(adapter, engine, cfg)
