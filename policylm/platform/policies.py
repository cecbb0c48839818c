"""Policies and their URIs: the one table that maps a URI scheme to a policy.

A policy acts for a batch of env slots: ``act(observations, slots) -> actions`` (env values), and
``reset(slot, seed)`` starts a new episode in a slot, seeding that slot's own random stream so
the same seeds give the same actions however episodes are spread over actors and slots.

URIs: ``random:``, ``constant:<action text>``, ``mix:<uri>?eps=<p>``, ``file://<path>`` (native
MLP checkpoint), ``pytorch://<path>?class=<module:Class>&init=<json>`` (external
``torch.nn.Module``, plain or in the external-policy shape with recurrent state; see
``policylm.platform.external_policies``), ``rllib://<checkpoint dir>``,
``hf://<model>?target_return=R&...`` (the LLM policy, ``policylm.platform.llm_policy``),
``http://<host:port>`` (a policylm Serve endpoint) and ``openai://<host:port>/v1?model=<name>``
(an OpenAI-compatible chat server; both in ``policylm.platform.remote_policies``) and
``python:<module:Class>?k=v`` (a scripted policy: a class implementing :class:`Policy`, built as
``Class(adapter, k=v, ...)``). Networks act greedily unless ``?sample=1``.
Policies may also have ``observe(slots, rewards)`` (called after each step) and ``stats()``.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import numpy as np

from policylm.platform.envs import EnvAdapter


class PolicyError(ValueError):
    """A policy URI that cannot be built; the message names the URI and the reason."""


class Policy(Protocol):
    """Acts for a batch of env slots (see module docstring)."""

    def reset(self, slot: int, seed: int) -> None: ...

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]: ...


class _SlotRngs:
    """One ``numpy`` Generator per env slot, reseeded at each episode start."""

    def __init__(self) -> None:
        self.rngs: dict[int, np.random.Generator] = {}

    def reset(self, slot: int, seed: int) -> None:
        self.rngs[slot] = np.random.default_rng(seed)

    def __getitem__(self, slot: int) -> np.random.Generator:
        if slot not in self.rngs:
            self.rngs[slot] = np.random.default_rng(slot)
        return self.rngs[slot]


class RandomPolicy:
    """Uniform random actions from the action space."""

    def __init__(self, adapter: EnvAdapter):
        self.space = adapter.action_space
        self.spaces: dict[int, Any] = {}

    def reset(self, slot: int, seed: int) -> None:
        space = copy.deepcopy(self.space)
        space.seed(int(seed) % (2**32))
        self.spaces[slot] = space

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        for s in slots:
            if s not in self.spaces:
                self.reset(s, s)
        return [self.spaces[s].sample() for s in slots]


class ConstantPolicy:
    """Always the same action, given as action text (``constant:right``)."""

    def __init__(self, adapter: EnvAdapter, text: str):
        self.action = adapter.codec.parse(text)

    def reset(self, slot: int, seed: int) -> None:
        pass

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        return [copy.copy(self.action) for _ in slots]


class MixPolicy:
    """``inner``'s action, replaced by a random one with probability ``eps`` per step."""

    def __init__(self, adapter: EnvAdapter, inner: Policy, eps: float):
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1], got {eps}")
        self.inner, self.eps = inner, eps
        self.random = RandomPolicy(adapter)
        self.rngs = _SlotRngs()

    def reset(self, slot: int, seed: int) -> None:
        self.inner.reset(slot, seed)
        self.random.reset(slot, seed + 1)
        self.rngs.reset(slot, seed + 2)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        actions = self.inner.act(observations, slots)
        noisy = self.random.act(observations, slots)
        return [n if self.rngs[s].random() < self.eps else a
                for a, n, s in zip(actions, noisy, slots, strict=True)]


class LogitsPolicy:
    """Wraps ``logits_fn(obs_batch[B, D]) -> logits[B, n]`` for a Discrete action space;
    greedy (argmax) or sampled from the softmax with each slot's own random stream."""

    def __init__(self, adapter: EnvAdapter, logits_fn: Callable[[np.ndarray], np.ndarray],
                 sample: bool = False):
        self.adapter, self.logits_fn, self.sample = adapter, logits_fn, sample
        self.rngs = _SlotRngs()
        self.start = int(getattr(adapter.action_space, "start", 0))

    def reset(self, slot: int, seed: int) -> None:
        self.rngs.reset(slot, seed)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        batch = np.stack([self.adapter.flatten(o) for o in observations])
        return choose(self.logits_fn(batch), [self.rngs[s] for s in slots], self.sample,
                      self.start)


def choose(logits: Any, rngs: Sequence[np.random.Generator], sample: bool,
           start: int = 0) -> list[int]:
    """Actions from ``logits [B, n]``: argmax, or sampled from the softmax with each row's own
    random stream; ``start`` is the action space's first value."""
    logits = np.asarray(logits, dtype=np.float64)
    if not sample:
        return [int(i) + start for i in logits.argmax(-1)]
    z = np.exp(logits - logits.max(-1, keepdims=True))
    p = z / z.sum(-1, keepdims=True)
    return [int(rng.choice(len(row), p=row)) + start for row, rng in zip(p, rngs, strict=True)]


def split_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """``"mix:random:?eps=0.3"`` -> ``("mix", "random:", {"eps": "0.3"})``.

    The body is what follows ``scheme:`` (and ``//`` when present); the query is taken from the
    last ``?`` so nested URIs keep theirs.
    """
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme.isidentifier():
        raise PolicyError(f"policy URI {uri!r} has no scheme; write e.g. random: or rllib://DIR")
    body, _, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    if body.startswith("//"):
        body = body[2:]
    return scheme, body, dict(parse_qsl(query, keep_blank_values=True))


def with_params(uri: str, **params: object) -> str:
    """``uri`` with query parameters set (replacing ones it has): ``with_params("hf://m",
    target_return=50)`` -> ``"hf://m?target_return=50"``."""
    scheme, body, query = split_uri(uri)
    query.update({k: str(v) for k, v in params.items()})
    slashes = "//" if uri[len(scheme) + 1:].startswith("//") else ""
    return f"{scheme}:{slashes}{body}?{urlencode(query, safe='/:')}"


def absolute_paths(uri: str) -> str:
    """``hf://`` URIs with a relative model or adapter path that exists here rewritten to
    absolute paths, so actors whose working directory differs find the same files."""
    from pathlib import Path

    scheme, body, params = split_uri(uri)
    if scheme != "hf":
        return uri
    if body and not body.startswith("/") and Path(body).exists():
        body = str(Path(body).resolve())
    adapter = params.get("adapter", "")
    if adapter and not adapter.startswith("/") and Path(adapter).exists():
        params["adapter"] = str(Path(adapter).resolve())
    query = f"?{urlencode(params, safe='/:')}" if params else ""
    return f"hf://{body}{query}"


def _flag(params: dict[str, str], key: str) -> bool:
    return params.pop(key, "0").lower() in ("1", "true", "yes")


def _python_policy(uri: str, body: str, params: dict[str, str], adapter: EnvAdapter) -> Policy:
    module_name, _, cls_name = body.partition(":")
    if not module_name or not cls_name:
        raise PolicyError(f"{uri!r}: write python:<module>:<Class>, e.g. "
                          "python:policylm.platform.minigrid_bot:MiniGridBot")
    cls = getattr(importlib.import_module(module_name), cls_name, None)
    if cls is None:
        raise PolicyError(f"{uri!r}: module {module_name} has no {cls_name}")
    policy = cls(adapter, **params)
    if not (callable(getattr(policy, "act", None)) and callable(getattr(policy, "reset", None))):
        raise PolicyError(f"{uri!r}: {cls_name} must have act(observations, slots) and "
                          "reset(slot, seed)")
    return policy


def _build(uri: str, adapter: EnvAdapter) -> Policy:
    scheme, body, params = split_uri(uri)
    if scheme == "random":
        return RandomPolicy(adapter)
    if scheme == "constant":
        return ConstantPolicy(adapter, body)
    if scheme == "mix":
        if "eps" not in params:
            raise PolicyError(f"{uri!r}: mix needs ?eps=<probability>, e.g. mix:random:?eps=0.3")
        eps = float(params.pop("eps"))
        inner = body + (f"?{urlencode(params)}" if params else "")
        return MixPolicy(adapter, policy_from_uri(inner, adapter), eps)
    if scheme == "hf":
        from policylm.platform.llm_policy import llm_policy_from_params

        if not body:
            raise PolicyError(f"{uri!r}: name a model, e.g. hf://smollm2-135m or hf:///path/dir")
        return llm_policy_from_params(body, params, adapter)
    if scheme == "python":
        return _python_policy(uri, body, params, adapter)
    if scheme in ("http", "https", "openai"):
        from policylm.platform import remote_policies

        if not body:
            raise PolicyError(f"{uri!r}: name the server, e.g. http://127.0.0.1:8000")
        if scheme == "openai":
            return remote_policies.openai_policy(body, params, adapter)
        return remote_policies.http_policy(body, params, adapter, scheme)
    if scheme in ("file", "pytorch", "rllib"):
        from policylm.platform import network_policies

        sample = _flag(params, "sample")
        if scheme == "file":
            fn = network_policies.mlp_logits_fn(body, adapter)
        elif scheme == "pytorch":
            from policylm.platform.external_policies import external_policy

            if "class" not in params:
                raise PolicyError(f"{uri!r}: pytorch:// needs ?class=<module:Class> (or "
                                  "path/to/file.py:Class)")
            init = json.loads(params.get("init", "{}"))
            return external_policy(body, params["class"], init, adapter, sample)
        else:
            fn = network_policies.rllib_logits_fn(body, adapter)
        return LogitsPolicy(adapter, fn, sample=sample)
    raise PolicyError(
        f"policy URI {uri!r}: unknown scheme {scheme!r}; known: random:, constant:<action>, "
        "mix:<uri>?eps=<p>, python:<module:Class>, file://<path>, "
        "pytorch://<path>?class=<module:Class>, rllib://<dir>, "
        "hf://<model>?target_return=<R>, http://<host:port>, openai://<host:port>/v1?model=<m>"
    )


def policy_from_uri(uri: str, adapter: EnvAdapter) -> Policy:
    """Build the policy a URI names for ``adapter``'s env; errors name the URI and the reason."""
    try:
        return _build(uri, adapter)
    except PolicyError:
        raise
    except (ValueError, OSError, TypeError, KeyError, ImportError, RuntimeError) as err:
        # RemoteError (a RuntimeError) included: a server that is not there fails here
        raise PolicyError(f"policy URI {uri!r}: {err}") from err
