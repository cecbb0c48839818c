"""Ray Serve application for LLM policy inference.

Import path for ``serve run`` / ``serve deploy``: ``policylm.serve.app:build_app`` with the keys
of :class:`ServeConfig` as ``args`` (see ``configs/serve_cartpole.yaml``). ``policylm serve
policy=<uri>`` runs the same application.

HTTP API (FastAPI; OpenAPI schema at ``/docs`` and ``/openapi.json``):

- ``POST /v1/act``: observations (raw or text) -> actions, batched across concurrent requests
  into one engine call (``@serve.batch``);
- ``POST /v1/episodes/{id}/reward``, ``DELETE /v1/episodes/{id}``: server-side adaptive target;
- ``GET /v1/health``, ``GET /v1/policy``;
- ``POST /v1/chat/completions``: OpenAI-compatible chat with the policy's model.

Safe by default: the HTTP proxy binds to 127.0.0.1; with an API key (``api_key`` or the
``POLICYLM_API_KEY`` variable) every route but health and the schema needs
``Authorization: Bearer <key>`` (else 401); bodies over ``max_body_bytes`` get 413; malformed
bodies 422 naming the field; a failing engine call 500 with the reason, and the replica stays up.

Faults: episode state moves on only once a step's answer exists, so a call that got 500 or 504
is sent again as it was (the same ``steps`` and ``rewards``: idempotent, the reward counts once);
a step > 0 of an episode the store no longer knows gets 404 and a step the episode is not at 409
(:mod:`policylm.platform.serving.episodes`). A request past ``request_timeout_s`` gets 504, and
the replica stops its work at the next engine call of it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from policylm.platform.config import field, require

# FastAPI reads the route annotations at run time, so the schemas are imported here, not in
# make_api (pydantic and numpy only; Ray and torch stay lazy)
from policylm.platform.serving import (
    ActRequest,
    ActResponse,
    ChatRequest,
    EpisodeOut,
    RequestError,
    RewardRequest,
)

log = logging.getLogger("policylm")

API_KEY_ENV = "POLICYLM_API_KEY"
OPEN_PATHS = ("/v1/health", "/docs", "/openapi.json", "/docs/oauth2-redirect")


@dataclass
class ServeConfig:
    """Serve an LLM policy over HTTP with Ray Serve."""

    policy: str = field("hf://smollm2-135m?temperature=0", doc="LLM policy URI (hf://...); its "
                        "target_return is the default target of requests that give none")
    env_id: str = field("CartPole-v1", doc="Gymnasium env id the policy acts in")
    env_options: dict = field(factory=dict, doc="options for the env adapter")
    host: str = field("127.0.0.1", doc="HTTP bind address (0.0.0.0 exposes it to the network)")
    port: int = field(8000, doc="HTTP port")
    name: str = field("policylm", doc="Serve application name")
    route_prefix: str = field("/", doc="HTTP route prefix of the application")
    api_key: str = field("", doc=f"bearer key required on every route but health and the "
                         f"schema; empty: read {API_KEY_ENV}; both empty: no key")
    max_batch_size: int = field(16, doc="requests batched into one engine call")
    batch_wait_timeout_s: float = field(0.01, doc="longest wait for a batch to fill")
    max_ongoing_requests: int = field(64, doc="requests a replica holds at once (>= batch size)")
    num_replicas: int = field(1, doc="replicas (ignored when autoscaling is set)")
    autoscaling: dict = field(factory=dict, doc="Serve autoscaling_config, e.g. {min_replicas: "
                              "1, max_replicas: 4, target_ongoing_requests: 16}")
    num_cpus: float = field(1.0, doc="CPUs reserved per replica")
    num_gpus: float = field(0.0, doc="GPUs per replica (engine=vllm needs 1)")
    torch_threads: int = field(0, doc="torch threads per replica (0: num_cpus, at least 1)")
    episode_ttl_s: float = field(600.0, doc="drop an episode's state after this idle time")
    max_body_bytes: int = field(1_000_000, doc="larger request bodies get 413")
    max_observations: int = field(256, doc="observations per act request (more: 413)")
    max_prompt_tokens: int = field(1024, doc="tokens of one prompt, act row or chat (more: 422)")
    max_new_tokens: int = field(256, doc="tokens a chat choice may ask to generate (more: 422)")
    max_rows_per_call: int = field(64, doc="prompt rows per engine call: a large request is "
                                           "split, so other requests run between its calls")
    large_request_rows: int = field(32, doc="requests with more observations skip the batch "
                                            "queue and run alone, in calls of max_rows_per_call")
    request_timeout_s: float = field(60.0, doc="a request still running after this gets 504")
    block: bool = field(True, doc="policylm serve: keep running until Ctrl-C")

    def validate(self) -> None:
        require(self.policy.startswith("hf://"), "policy", "serve an LLM policy: hf://<model>")
        require(0 < self.port < 65536, "port", "must be 1-65535")
        require(self.max_batch_size >= 1, "max_batch_size", "must be >= 1")
        require(self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s", "must be >= 0")
        require(self.max_ongoing_requests >= self.max_batch_size, "max_ongoing_requests",
                "must be >= max_batch_size, or batches can never fill")
        require(self.num_replicas >= 1, "num_replicas", "must be >= 1")
        require(self.max_body_bytes >= 1024, "max_body_bytes", "must be >= 1024")
        require(self.episode_ttl_s > 0, "episode_ttl_s", "must be > 0")
        for name in ("max_observations", "max_prompt_tokens", "max_new_tokens",
                     "max_rows_per_call", "large_request_rows"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        require(self.request_timeout_s > 0, "request_timeout_s", "must be > 0")

    def key(self) -> str:
        return self.api_key or os.environ.get(API_KEY_ENV, "")

    def limits(self) -> Any:
        """The service's limits from these settings."""
        from policylm.platform.serving import ServiceLimits

        return ServiceLimits(self.max_observations, self.max_prompt_tokens, self.max_new_tokens,
                             self.max_rows_per_call)


def make_api(backend: Any, cfg: ServeConfig) -> Any:
    """The FastAPI app over ``backend``, which offers the async ``act(request, deadline)``
    (``deadline``: a ``time.monotonic()`` time after which the request's work stops),
    ``chat(request)``, ``reward(episode_id, reward)``, ``end(episode_id)`` and ``info()``, and
    ``replica`` (named in every response's ``x-policylm-replica`` header)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="policylm policy server", version="1",
                  description="Acts in an environment with a return-conditioned LLM policy.")
    key = cfg.key()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes the input, which a NaN makes unserialisable
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg"),
                                         "type": e.get("type")} for e in err.errors()]},
                            status_code=422)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        path = request.url.path[len(cfg.route_prefix.rstrip("/")):] or "/"
        replica = {"x-policylm-replica": backend.replica}
        if key and path not in OPEN_PATHS:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
                return JSONResponse({"detail": "missing or wrong API key: send the header "
                                     "'Authorization: Bearer <key>'"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer", **replica})
        length = request.headers.get("content-length")
        too_big = f"request body over {cfg.max_body_bytes} bytes; send fewer observations per " \
                  "request or raise max_body_bytes"
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            return JSONResponse({"detail": too_big}, status_code=413, headers=replica)
        chunked = length is None and request.method in ("POST", "PUT", "PATCH")
        if chunked and len(await request.body()) > cfg.max_body_bytes:  # count what came
            return JSONResponse({"detail": too_big}, status_code=413, headers=replica)
        response = await call_next(request)
        response.headers.update(replica)
        return response

    def failed(err: Exception) -> JSONResponse:
        if isinstance(err, RequestError):
            return JSONResponse({"detail": str(err), "field": err.field},
                                status_code=err.status)
        if isinstance(err, TimeoutError):
            return JSONResponse({"detail": f"the request took longer than "
                                 f"{cfg.request_timeout_s:g} s (request_timeout_s); send fewer "
                                 "observations or tokens per request, or retry"},
                                status_code=504)
        log.exception("engine call failed")
        return JSONResponse({"detail": f"the engine call failed: {type(err).__name__}: {err}"},
                            status_code=500)

    async def answer(work: Any) -> Any:
        try:
            result = await asyncio.wait_for(work, cfg.request_timeout_s)
        except Exception as err:
            return failed(err)
        return failed(result) if isinstance(result, Exception) else result

    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/policy")
    async def policy() -> Any:
        return await answer(backend.info())

    @app.post("/v1/act", response_model=ActResponse, responses={413: {}, 422: {}, 500: {},
                                                                504: {}})
    async def act(body: ActRequest) -> Any:
        # the same deadline for the replica's work as for the answer: past it, both stop
        return await answer(backend.act(body, time.monotonic() + cfg.request_timeout_s))

    @app.post("/v1/episodes/{episode_id}/reward", response_model=EpisodeOut)
    async def reward(episode_id: str, body: RewardRequest) -> Any:
        return await answer(backend.reward(episode_id, body.reward))

    @app.delete("/v1/episodes/{episode_id}", response_model=EpisodeOut)
    async def end(episode_id: str) -> Any:
        return await answer(backend.end(episode_id))

    @app.post("/v1/chat/completions", responses={422: {}, 500: {}, 504: {}})
    async def chat(body: ChatRequest) -> Any:
        return await answer(backend.chat(body))

    return app


class PolicyBackend:
    """The Ray-free backend of :func:`make_api`: the service called in a worker thread, one
    request per engine call (what the deployment batches). For tests and local debugging."""

    replica = "local"

    def __init__(self, service: Any):
        self.service = service

    async def act(self, request: Any, deadline: float | None = None) -> Any:
        return (await asyncio.to_thread(self.service.act, [request], [deadline]))[0]

    async def chat(self, request: Any) -> Any:
        return (await asyncio.to_thread(self.service.chat, [request]))[0]

    async def reward(self, episode_id: str, reward: float) -> Any:
        return self.service.reward(episode_id, reward)

    async def end(self, episode_id: str) -> Any:
        return await asyncio.to_thread(self.service.end, episode_id)

    async def info(self) -> dict:
        return {**self.service.info(), "open_episodes": self.service.store.count(),
                "replica": self.replica}


class RemoteStore:
    """The episode store of the application (its own deployment, one replica) as the service
    sees it: the store's methods through a Serve handle. Replicas act on episodes whatever
    replica served their earlier calls. Errors come back as values and are raised here."""

    def __init__(self, handle: Any):
        self.handle = handle

    @staticmethod
    def _unwrap(out: dict) -> Any:
        if "error" in out:
            raise RequestError(*out["error"])
        return out["ok"]

    def _call(self, method: str, *args: Any) -> Any:  # from a worker thread
        return self._unwrap(self.handle.call.remote(method, *args).result())

    async def acall(self, method: str, *args: Any) -> Any:  # from the event loop
        return self._unwrap(await self.handle.call.remote(method, *args))

    def begin(self, rows: list, default_target: float, history: int = 0) -> dict:
        return self._call("begin", rows, default_target, history)

    def commit(self, rows: list, history: int = 0) -> None:
        return self._call("commit", rows, history)

    def reward(self, episode_id: str, reward: float) -> dict:
        return self._call("reward", episode_id, reward)

    def end(self, episode_id: str) -> dict:
        return self._call("end", episode_id)

    def count(self) -> int:
        return self._call("count")


def _deployment_classes() -> tuple[Any, Any]:
    """The Serve deployments: the policy replicas and the episode store they share (defined on
    first use, so importing this module needs no Ray)."""
    from ray import serve

    @serve.deployment(num_replicas=1)
    class EpisodeStoreDeployment:
        """Episode state for every policy replica (one replica: the state lives here)."""

        def __init__(self, ttl_s: float):
            from policylm.platform.serving import EpisodeStore

            self.store = EpisodeStore(ttl_s)

        def call(self, method: str, *args: Any) -> dict:
            try:
                return {"ok": getattr(self.store, method)(*args)}
            except RequestError as err:
                return {"error": [err.field, err.message, err.status]}

    @serve.deployment
    @serve.ingress()
    class PolicyDeployment:
        """One replica: the policy service, batched acting and chat, the FastAPI app."""

        def __init__(self, config: dict, store: Any):
            import torch

            from policylm.platform.serving import PolicyService

            self.cfg = ServeConfig(**config)
            torch.set_num_threads(self.cfg.torch_threads or max(1, int(self.cfg.num_cpus)))
            self.store = RemoteStore(store)
            self.service = PolicyService(self.cfg.policy, self.cfg.env_id, self.cfg.env_options,
                                         store=self.store, limits=self.cfg.limits())
            self.replica = serve.get_replica_context().replica_id.unique_id
            for method in (self.act_batch, self.chat_batch):
                method.set_max_batch_size(self.cfg.max_batch_size)
                method.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)

        def __serve_build_asgi_app__(self) -> Any:
            return make_api(self, self.cfg)

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
        async def act_batch(self, requests: list[Any], deadlines: list[float]) -> list[Any]:
            # a thread, so the event loop keeps queueing the next batch while this one runs
            return await asyncio.to_thread(self.service.act, requests, deadlines)

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
        async def chat_batch(self, requests: list[Any]) -> list[Any]:
            return await asyncio.to_thread(self.service.chat, requests)

        async def act(self, request: Any, deadline: float) -> Any:
            if request.size() > self.cfg.large_request_rows:  # alone, not holding up a batch
                return (await asyncio.to_thread(self.service.act, [request], [deadline]))[0]
            return await self.act_batch(request, deadline)

        async def chat(self, request: Any) -> Any:
            return await self.chat_batch(request)

        async def reward(self, episode_id: str, reward: float) -> Any:
            return EpisodeOut(**await self.store.acall("reward", episode_id, reward))

        async def end(self, episode_id: str) -> Any:
            out = EpisodeOut(**await self.store.acall("end", episode_id))
            # this replica's cached prompts of the episode (other replicas' age out of their
            # engines' byte budget)
            await asyncio.to_thread(self.service.forget, [episode_id])
            return out

        async def info(self) -> dict:
            return {**self.service.info(), "open_episodes": await self.store.acall("count"),
                    "replica": self.replica}

    return PolicyDeployment, EpisodeStoreDeployment


def deployment_options(cfg: ServeConfig) -> dict:
    """Replica settings of the deployment from the config."""
    opts: dict[str, Any] = {"max_ongoing_requests": cfg.max_ongoing_requests,
                            "ray_actor_options": {"num_cpus": cfg.num_cpus,
                                                  "num_gpus": cfg.num_gpus}}
    if cfg.autoscaling:
        opts["autoscaling_config"] = dict(cfg.autoscaling)
    else:
        opts["num_replicas"] = cfg.num_replicas
    return opts


def application(cfg: ServeConfig) -> Any:
    """The bound Serve application for ``cfg``."""
    from policylm.platform.policies import absolute_paths
    from policylm.runtime import runtime_env

    cfg.policy = absolute_paths(cfg.policy)
    opts = deployment_options(cfg)
    opts["ray_actor_options"]["runtime_env"] = runtime_env()
    policy, store = _deployment_classes()
    episodes = store.options(ray_actor_options={"num_cpus": 0, "runtime_env": runtime_env()}) \
        .bind(cfg.episode_ttl_s)
    return policy.options(**opts).bind(asdict(cfg), episodes)


def build_app(args: dict) -> Any:
    """Application builder for ``serve run policylm.serve.app:build_app key=value`` and the
    ``import_path`` of a Serve config file: ``args`` are :class:`ServeConfig` keys."""
    from policylm.platform.config import config_from_dict

    return application(config_from_dict(ServeConfig, dict(args or {})))


def start(cfg: ServeConfig) -> str:
    """Deploy ``cfg``'s application on the running (or a new local) Ray and return its base
    URL once the replicas are ready."""
    from ray import serve

    from policylm.platform.engines.models import resolve_model
    from policylm.platform.policies import absolute_paths, split_uri
    from policylm.platform.policies.uri import uri_paths
    from policylm.runtime import check_visible, init_ray

    resolve_model(split_uri(cfg.policy)[1])  # convert/cache the embedded model once
    init_ray()
    check_visible([("policy", p) for p in uri_paths(absolute_paths(cfg.policy))])  # replicas
    if not cfg.key():  # said once, here, not by every replica
        log.warning("no API key: every route is open to whoever reaches %s:%d (set api_key= or "
                    "%s to require one)", cfg.host, cfg.port, API_KEY_ENV)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(application(cfg), name=cfg.name, route_prefix=cfg.route_prefix)
    return f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
