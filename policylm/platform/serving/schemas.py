"""The HTTP API's request and response schemas, and the errors a request can get. Numbers must be
finite (NaN and Infinity get 422 naming the field) and chat roles known."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RequestError(ValueError):
    """A request that parses but does not fit the policy (wrong observation shape, unknown
    episode, a step the episode is not at, a request past its deadline): the message names the
    field and what was expected or what to do (HTTP 422, 404, 409 or 504: ``status``)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


# --- schemas ---------------------------------------------------------------------------------

class ActRequest(BaseModel):
    """``POST /v1/act``: give ``observations`` (raw) or ``texts`` (already encoded), not both."""

    observations: list[Any] | None = Field(
        None, description="raw observations in the env's observation space (JSON: numbers, "
                          "nested lists, objects for Dict spaces)")
    texts: list[str] | None = Field(None, description="observations already encoded as text")
    model_config = ConfigDict(allow_inf_nan=False)  # NaN/Infinity: 422 naming the field

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
        None, description="per observation: the step the client is at (0 on an episode's "
                          "first call). With episode ids it makes a retry of the same step "
                          "idempotent (the reward counts once, the step is not skipped) and a "
                          "lost episode an error (404) instead of a silent restart; a step the "
                          "episode is not at gets 409. Without episode ids: the step written "
                          "in the prompt")

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
        if self.steps is not None and min(self.steps) < 0:
            raise ValueError("steps must be >= 0 (0 on an episode's first call)")
        if isinstance(self.target_return, list) and len(self.target_return) != n:
            raise ValueError(f"target_return has {len(self.target_return)} entries for {n} "
                             "observations; give one number or one per observation")
        if self.observations is not None:
            bad = first_non_finite(self.observations)
            if bad is not None:
                raise ValueError(f"observations{bad} is not a finite number (NaN and Infinity "
                                 "are refused)")
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
    thought: str | None = Field(None, description="think mode: the reasoning written before "
                                                  "the action")


class ActResponse(BaseModel):
    actions: list[ActionOut]


class RewardRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    reward: float = Field(description="reward earned since the episode's previous report")


class EpisodeOut(BaseModel):
    episode_id: str
    step: int
    target_return: float
    earned: float
    remaining_target: float


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"] = Field(
        description="system, user or assistant (other roles get 422)")
    content: str


class ChatRequest(BaseModel):
    """OpenAI-compatible ``POST /v1/chat/completions`` (the fields this server honours)."""

    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    model_config = ConfigDict(allow_inf_nan=False)

    temperature: float = Field(1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(16, ge=1, description="tokens to generate per choice (the server's "
                                                  "max_new_tokens caps it: 422 above)")
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None


def first_non_finite(value: Any, path: str = "") -> str | None:
    """Where the first NaN or infinite number in a nested JSON value is (``[0][2]``,
    ``[1].pos``), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            bad = first_non_finite(v, f"{path}[{i}]")
            if bad is not None:
                return bad
    elif isinstance(value, dict):
        for k, v in value.items():
            bad = first_non_finite(v, f"{path}.{k}")
            if bad is not None:
                return bad
    return None
