"""Serving without Ray: the HTTP API's schemas (``schemas``), episode state shared by every
replica (``episodes``) and the policy service with its limits (``service``). The Ray Serve
application (``policylm.serve``) wraps them; the ``http://`` policy speaks the same schemas."""

from policylm.platform.serving.episodes import EpisodeStore, episode_seed
from policylm.platform.serving.schemas import (
    ActionOut,
    ActRequest,
    ActResponse,
    ChatMessage,
    ChatRequest,
    EpisodeOut,
    RequestError,
    RewardRequest,
)
from policylm.platform.serving.service import PolicyService, ServiceLimits

__all__ = ["ActRequest", "ActResponse", "ActionOut", "ChatMessage", "ChatRequest", "EpisodeOut",
           "EpisodeStore", "PolicyService", "RequestError", "RewardRequest", "ServiceLimits",
           "episode_seed"]
