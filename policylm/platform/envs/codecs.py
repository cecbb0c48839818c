"""Action codecs: the bridge between an env's action space and action text.

A codec gives the list of valid action strings (when the space is small enough to list, so an
LLM can score them all), turns text into an env action (raising :class:`ActionParseError` with
the reason when it cannot) and an env action into text. ``index``/``from_index`` number the
valid actions, which is what the trajectory's ``action_index`` column and scoring use.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

MAX_LISTED_ACTIONS = 256  # above this, an action space is parsed but not enumerated


class ActionParseError(ValueError):
    """Text that is not a valid action; the message says what was expected."""


class ActionCodec(Protocol):
    """What every codec offers (see module docstring)."""

    valid_actions: list[str] | None

    def parse(self, text: str) -> Any: ...

    def to_text(self, action: Any) -> str: ...

    def index(self, action: Any) -> int: ...

    def from_index(self, index: int) -> Any: ...


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _strip(text: str) -> str:
    text = text.strip()
    m = re.search(r"<action>(.*?)</action>", text, flags=re.S)
    return (m.group(1) if m else text).strip()


@dataclass
class NamedDiscreteCodec:
    """``Discrete(n)`` actions as names (``left``/``right``) or as their numbers."""

    names: list[str]
    start: int = 0

    @property
    def valid_actions(self) -> list[str]:
        return list(self.names)

    def parse(self, text: str) -> int:
        s = _strip(text).lower()
        for i, name in enumerate(self.names):
            if s == name.lower():
                return i + self.start
        for i, name in enumerate(self.names):  # lenient: first listed name the text starts with
            if s.startswith(name.lower()):
                return i + self.start
        raise ActionParseError(f"{text!r} is not one of the valid actions {self.names}")

    def to_text(self, action: Any) -> str:
        return self.names[self.index(action)]

    def index(self, action: Any) -> int:
        i = int(np.asarray(action).reshape(-1)[0]) - self.start
        if not 0 <= i < len(self.names):
            raise ActionParseError(f"action {action!r} is outside 0..{len(self.names) - 1}")
        return i

    def from_index(self, index: int) -> int:
        return int(index) + self.start


@dataclass
class MultiDiscreteCodec:
    """``MultiDiscrete(nvec)`` actions as space-separated integers, e.g. ``"1 0 2"``, or with
    ``packed`` as one digit per dimension written together, ``"102"`` (every ``n`` <= 10)."""

    nvec: list[int]
    packed: bool = False

    def __post_init__(self) -> None:
        if self.packed and max(self.nvec, default=0) > 10:
            raise ValueError(f"packed digits need at most 10 values per dimension, not "
                             f"{max(self.nvec)}; write the action with spaces (packed=False)")

    @property
    def _sep(self) -> str:
        return "" if self.packed else " "

    @property
    def valid_actions(self) -> list[str] | None:
        if int(np.prod(self.nvec)) > MAX_LISTED_ACTIONS:
            return None
        return [self._sep.join(map(str, c))
                for c in itertools.product(*[range(n) for n in self.nvec])]

    def parse(self, text: str) -> np.ndarray:
        body = _strip(text).replace(",", " ")
        parts = list("".join(body.split())) if self.packed else body.split()
        what = f"{len(self.nvec)} {'digits' if self.packed else 'integers'}"
        try:
            values = [int(p) for p in parts]
        except ValueError as err:
            raise ActionParseError(f"{text!r}: expected {what}") from err
        if len(values) != len(self.nvec):
            raise ActionParseError(f"{text!r}: expected {what}")
        for v, n in zip(values, self.nvec, strict=True):
            if not 0 <= v < n:
                raise ActionParseError(f"{text!r}: value {v} outside 0..{n - 1}")
        return np.asarray(values, dtype=np.int64)

    def to_text(self, action: Any) -> str:
        return self._sep.join(str(int(v)) for v in np.asarray(action).reshape(-1))

    def index(self, action: Any) -> int:
        return int(np.ravel_multi_index(np.asarray(action, dtype=np.int64), self.nvec))

    def from_index(self, index: int) -> np.ndarray:
        return np.asarray(np.unravel_index(int(index), self.nvec), dtype=np.int64)


@dataclass
class BoxBinsCodec:
    """A ``Box`` action discretised into ``bins`` evenly spaced values per dimension.

    Text is the bin numbers, e.g. ``"0 4 2"`` (``packed``: ``"042"``); the env action is each
    bin's centre value.
    """

    low: np.ndarray
    high: np.ndarray
    bins: int = 5
    packed: bool = False

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float32).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float32).reshape(-1)
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise ValueError("BoxBinsCodec needs a bounded Box; use BoxNumericCodec instead")
        self._inner = MultiDiscreteCodec([self.bins] * len(self.low), packed=self.packed)

    @property
    def valid_actions(self) -> list[str] | None:
        return self._inner.valid_actions

    def _values(self, idx: np.ndarray) -> np.ndarray:
        frac = idx.astype(np.float32) / max(self.bins - 1, 1)
        return (self.low + frac * (self.high - self.low)).astype(np.float32)

    def _bins(self, action: Any) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), self.low, self.high)
        frac = (a - self.low) / np.maximum(self.high - self.low, 1e-12)
        return np.rint(frac * (self.bins - 1)).astype(np.int64)

    def parse(self, text: str) -> np.ndarray:
        return self._values(self._inner.parse(text))

    def to_text(self, action: Any) -> str:
        return self._inner.to_text(self._bins(action))

    def index(self, action: Any) -> int:
        return self._inner.index(self._bins(action))

    def from_index(self, index: int) -> np.ndarray:
        return self._values(self._inner.from_index(index))


@dataclass
class BoxNumericCodec:
    """A ``Box`` action as numbers with fixed decimals: ``<action>0.12 -0.50</action>``.

    Parsing takes the numbers inside ``<action>...</action>`` (or the whole text), clipped to
    the space. Continuous actions cannot be listed, so ``valid_actions`` is ``None``.
    """

    low: np.ndarray
    high: np.ndarray
    decimals: int = 2
    tagged: bool = True
    valid_actions: list[str] | None = None

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float32).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float32).reshape(-1)

    def parse(self, text: str) -> np.ndarray:
        values = [float(v) for v in _NUMBER.findall(_strip(text))]
        if len(values) != len(self.low):
            raise ActionParseError(f"{text!r}: expected {len(self.low)} numbers, got {len(values)}")
        return np.clip(np.asarray(values, dtype=np.float32), self.low, self.high)

    def to_text(self, action: Any) -> str:
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), self.low, self.high)
        body = " ".join(f"{v:.{self.decimals}f}" for v in a)
        return f"<action>{body}</action>" if self.tagged else body

    def index(self, action: Any) -> int:
        return -1

    def from_index(self, index: int) -> Any:
        raise ActionParseError("continuous actions have no index; parse text instead")


BOX_CODECS = ("bins", "digits", "numeric")


def box_action_codec(space: gym.spaces.Box, box: str = "bins", bins: int = 5,
                     decimals: int = 2) -> BoxBinsCodec | BoxNumericCodec:
    """A Box action's codec by name: ``bins`` (``"2 8 4"``), ``digits`` (the same bins written
    together, ``"284"``: half the tokens to generate; ``bins`` <= 10) or ``numeric``
    (``<action>0.12 -0.50</action>`` with ``decimals``)."""
    if box in ("bins", "digits"):
        return BoxBinsCodec(space.low, space.high, bins=bins, packed=box == "digits")
    if box == "numeric":
        return BoxNumericCodec(space.low, space.high, decimals=decimals)
    raise ValueError(f"box codec {box!r} is unknown; use one of {', '.join(BOX_CODECS)}")


def default_codec(space: gym.Space, *, box: str = "bins", bins: int = 5,
                  decimals: int = 2) -> ActionCodec:
    """The generic codec for an action space: names for Discrete, integers for MultiDiscrete,
    :func:`box_action_codec` ``box`` for Box (``decimals`` for ``numeric``)."""
    if isinstance(space, gym.spaces.Discrete):
        return NamedDiscreteCodec([str(int(space.start) + i) for i in range(int(space.n))],
                                  start=int(space.start))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiDiscreteCodec([int(n) for n in np.asarray(space.nvec).reshape(-1)])
    if isinstance(space, gym.spaces.Box):
        return box_action_codec(space, box, bins, decimals)
    raise TypeError(
        f"action space {space} is not supported; policylm handles Discrete, MultiDiscrete and Box"
    )
