"""Policies and their URIs: the one table that maps a URI scheme to a policy.

A policy acts for a batch of env slots: ``act(observations, slots) -> actions`` (env values), and
``reset(slot, seed)`` starts a new episode in a slot, seeding that slot's own random stream so
the same seeds give the same actions however episodes are spread over actors and slots.

URIs: ``random:``, ``constant:<action text>``, ``mix:<uri>?eps=<p>``, ``file://<path>`` (native
MLP checkpoint), ``pytorch://<path>?class=<module:Class>&init=<json>`` (external
``torch.nn.Module``, plain or in the external-policy shape with recurrent state; see
``policylm.platform.policies.external``), ``rllib://<checkpoint dir>``,
``hf://<model>?target_return=R&...`` (the LLM policy, ``policylm.platform.policies.llm``),
``http://<host:port>`` (a policylm Serve endpoint) and ``openai://<host:port>/v1?model=<name>``
(an OpenAI-compatible chat server; both in ``policylm.platform.policies.remote``) and
``python:<module:Class>?k=v`` (a scripted policy: a class with ``act`` and ``reset``, best
derived from :class:`policylm.platform.policy.Policy`, built as ``Class(adapter, k=v, ...)``).
Networks act greedily unless ``?sample=1``.
``python:``, ``pytorch://`` (its ``class=``) and ``rllib://`` (pickled checkpoints) run code
from their input: for trusted inputs only.
The contract and its optional methods: ``policylm.platform.policy``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

from policylm.platform.envs import EnvAdapter
from policylm.platform.policies.base import (
    ConstantPolicy,
    MixPolicy,
    PolicyError,
    RandomPolicy,
    check_eps,
    network_policy,
)
from policylm.platform.policy import Policy, as_policy

# where rllib:// checkpoints are loaded (needs Ray and RLlib)
RLLIB_LOADER = "policylm.rllib.checkpoints"


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
    """``hf://`` URIs with a relative model, adapter, ``shots_from`` or ``lead_from`` path that
    exists here rewritten to absolute paths, so actors whose working directory differs find the
    same files."""
    from pathlib import Path

    scheme, body, params = split_uri(uri)
    if scheme != "hf":
        return uri
    if body and not body.startswith("/") and Path(body).exists():
        body = str(Path(body).resolve())
    for key in ("adapter", "shots_from", "lead_from"):
        path = params.get(key, "")
        if path and not path.startswith("/") and Path(path).exists():
            params[key] = str(Path(path).resolve())
    query = f"?{urlencode(params, safe='/:')}" if params else ""
    return f"hf://{body}{query}"


def uri_paths(uri: str) -> list[str]:
    """The local files and directories a policy URI reads (model, adapter, checkpoint), for
    checking that every node of a cluster sees them."""
    from pathlib import Path

    scheme, body, params = split_uri(uri)
    if scheme == "mix":
        return uri_paths(body)
    if scheme == "hf":
        return [p for p in (body, *(params.get(k, "") for k in ("adapter", "shots_from",
                                                                   "lead_from")))
                if p and Path(p).exists()]
    if scheme in ("file", "pytorch", "rllib"):
        return [body]
    return []


def _flag(params: dict[str, str], key: str) -> bool:
    return params.pop(key, "0").lower() in ("1", "true", "yes")


def _python_policy(uri: str, body: str, params: dict[str, str], adapter: EnvAdapter) -> Policy:
    module_name, _, cls_name = body.partition(":")
    if not module_name or not cls_name:
        raise PolicyError(f"{uri!r}: write python:<module>:<Class>, e.g. "
                          "python:policylm.platform.envs.minigrid_bot:MiniGridBot")
    cls = getattr(importlib.import_module(module_name), cls_name, None)
    if cls is None:
        raise PolicyError(f"{uri!r}: module {module_name} has no {cls_name}")
    policy = cls(adapter, **params)
    try:
        return as_policy(policy)
    except TypeError as e:
        raise PolicyError(f"{uri!r}: {e}") from e


def _mix_parts(uri: str, body: str, params: dict[str, str]) -> tuple[float, str]:
    """``mix:<inner>?eps=p``'s probability (checked) and inner URI (its own query kept)."""
    if "eps" not in params:
        raise PolicyError(f"{uri!r}: mix needs ?eps=<probability>, e.g. mix:random:?eps=0.3")
    eps = check_eps(float(params.pop("eps")))
    return eps, body + (f"?{urlencode(params)}" if params else "")


def _build(uri: str, adapter: EnvAdapter) -> Policy:
    scheme, body, params = split_uri(uri)
    if scheme == "random":
        return RandomPolicy(adapter)
    if scheme == "constant":
        return ConstantPolicy(adapter, body)
    if scheme == "mix":
        eps, inner = _mix_parts(uri, body, params)
        return MixPolicy(adapter, policy_from_uri(inner, adapter), eps)
    if scheme == "hf":
        from policylm.platform.policies.llm import llm_policy_from_params

        if not body:
            raise PolicyError(f"{uri!r}: name a model, e.g. hf://smollm2-135m or hf:///path/dir")
        return llm_policy_from_params(body, params, adapter)
    if scheme == "python":
        return _python_policy(uri, body, params, adapter)
    if scheme in ("http", "https", "openai"):
        from policylm.platform.policies.remote import http_policy, openai_policy

        if not body:
            raise PolicyError(f"{uri!r}: name the server, e.g. http://127.0.0.1:8000")
        if scheme == "openai":
            return openai_policy(body, params, adapter)
        return http_policy(body, params, adapter, scheme)
    if scheme in ("file", "pytorch", "rllib"):
        sample = _flag(params, "sample")
        if scheme == "file":
            from policylm.platform.policies.network import mlp_logits_fn

            fn = mlp_logits_fn(body, adapter)
        elif scheme == "pytorch":
            from policylm.platform.policies.external import external_policy

            if "class" not in params:
                raise PolicyError(f"{uri!r}: pytorch:// needs ?class=<module:Class> (or "
                                  "path/to/file.py:Class)")
            init = json.loads(params.get("init", "{}"))
            return external_policy(body, params["class"], init, adapter, sample)
        else:
            # RLlib checkpoints need Ray, which this Ray-free core never imports: the loader
            # lives in the Ray layer and is found by name, as python: policies are
            fn = importlib.import_module(RLLIB_LOADER).rllib_logits_fn(body, adapter)
        return network_policy(adapter, fn, sample=sample)
    raise PolicyError(
        f"policy URI {uri!r}: unknown scheme {scheme!r}; known: random:, constant:<action>, "
        "mix:<uri>?eps=<p>, python:<module:Class>, file://<path>, "
        "pytorch://<path>?class=<module:Class>, rllib://<dir>, "
        "hf://<model>?target_return=<R>, http://<host:port>, openai://<host:port>/v1?model=<m>"
    )


@contextlib.contextmanager
def _named(uri: str) -> Iterator[None]:
    """Errors of building or checking ``uri`` as a :class:`PolicyError` naming it."""
    try:
        yield
    except PolicyError:
        raise
    except (ValueError, OSError, TypeError, KeyError, ImportError, RuntimeError) as err:
        # RemoteError (a RuntimeError) included: a server that is not there fails here
        raise PolicyError(f"policy URI {uri!r}: {err}") from err


def policy_from_uri(uri: str, adapter: EnvAdapter) -> Policy:
    """Build the policy a URI names for ``adapter``'s env; errors name the URI and the reason."""
    with _named(uri):
        return _build(uri, adapter)


def check_uri(uri: str, adapter: EnvAdapter) -> None:
    """Raise the :class:`PolicyError` that building ``uri`` for ``adapter``'s env would, before
    any actor starts. An ``hf://`` URI is parsed into its spec and checked without loading
    weights (a driver need not hold the model its actors play); ``mix:`` checks its inner URI;
    the other schemes are cheap to build and are built."""
    with _named(uri):
        scheme, body, params = split_uri(uri)
        if scheme == "hf":
            from policylm.platform.policies.llm import check_config, parse_llm_spec

            if not body:
                raise PolicyError(f"{uri!r}: name a model, e.g. hf://smollm2-135m")
            check_config(parse_llm_spec(body, params).cfg, adapter)
        elif scheme == "mix":
            check_uri(_mix_parts(uri, body, params)[1], adapter)
        else:
            _build(uri, adapter)
