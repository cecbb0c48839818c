"""The policy contract: the base class every policy derives from (the scripted bots in
``platform.envs`` too, which is why it sits below both packages).

A policy acts for a batch of env slots: ``act(observations, slots) -> actions`` (env values) and
``reset(slot, seed)`` starts an episode in a slot, seeding that slot's own random stream so the
same seeds give the same actions however episodes are spread over actors and slots. The other
methods are optional and have no-op defaults here, so the runners call them on every policy:

- ``observe(slots, rewards)``: the step's rewards, after every step (adaptive targets);
- ``stats()``: the counts a policy keeps (actions, invalid answers...), or None;
- ``thoughts`` / ``targets``: what the last ``act`` wrote per slot, in the call's order (think
  mode's reasoning; the target return each prompt was written with), or None;
- ``set_lora(tensors, scaling)``: new LoRA weights for an online-trained policy; returns how many
  engines took them.

A ``python:`` policy class need not derive from :class:`Policy`: :func:`as_policy` completes it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any


class Policy(ABC):
    """Acts for a batch of env slots (see module docstring)."""

    thoughts: Sequence[str | None] | None = None
    targets: Sequence[float | None] | None = None

    @abstractmethod
    def reset(self, slot: int, seed: int) -> None:
        """Start an episode in ``slot``, seeding its random stream with ``seed``."""

    @abstractmethod
    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        """One action per observation; ``slots[i]`` is the env slot of ``observations[i]``."""

    def observe(self, slots: Sequence[int], rewards: Sequence[float]) -> None:
        """The rewards the last actions earned, one per slot (no-op here)."""
        return None

    def stats(self) -> dict[str, Any] | None:
        """The counts this policy keeps, or None when it keeps none."""
        return None

    def set_lora(self, tensors: dict[str, Any], scaling: float) -> int:
        """Take new LoRA weights (online training); returns the engines updated (0 here)."""
        return 0


class _Completed(Policy):
    """A user's policy object with ``act`` and ``reset`` only (or some of the optional methods),
    completed with the contract's defaults; its other attributes read through."""

    def __init__(self, inner: Any):
        self.inner = inner

    def reset(self, slot: int, seed: int) -> None:
        self.inner.reset(slot, seed)

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        return self.inner.act(observations, slots)

    def observe(self, slots: Sequence[int], rewards: Sequence[float]) -> None:
        if hasattr(self.inner, "observe"):
            self.inner.observe(slots, rewards)

    def stats(self) -> dict[str, Any] | None:
        return self.inner.stats() if hasattr(self.inner, "stats") else None

    def set_lora(self, tensors: dict[str, Any], scaling: float) -> int:
        return self.inner.set_lora(tensors, scaling) if hasattr(self.inner, "set_lora") else 0

    @property
    def thoughts(self) -> Sequence[str | None] | None:  # type: ignore[override]
        return getattr(self.inner, "thoughts", None)

    @property
    def targets(self) -> Sequence[float | None] | None:  # type: ignore[override]
        return getattr(self.inner, "targets", None)

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def as_policy(obj: Any) -> Policy:
    """``obj`` as a :class:`Policy`: itself when it derives from it, else completed with the
    contract's defaults. Raises TypeError when it lacks ``act`` or ``reset``."""
    if isinstance(obj, Policy):
        return obj
    if not (callable(getattr(obj, "act", None)) and callable(getattr(obj, "reset", None))):
        raise TypeError(f"{type(obj).__name__} must have act(observations, slots) and "
                        "reset(slot, seed)")
    return _Completed(obj)
