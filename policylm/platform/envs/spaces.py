"""Observations and actions as JSON: :func:`from_json` turns a JSON value into what a gymnasium
space holds (arrays of its dtype and shape, ints, dicts, tuples) and :func:`to_json` turns env
values back into plain JSON. The server reads observations and the ``http://`` policy reads
actions with them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SpaceValueError(ValueError):
    """A JSON value that does not fit its space; ``field`` names where it was."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def from_json(space: Any, value: Any, name: str = "observation") -> Any:
    """A JSON value (observation or action) as the gymnasium ``space`` holds it (arrays of its
    dtype and shape, ints, dicts, tuples); :class:`SpaceValueError` naming ``name`` when it does
    not fit."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        if not isinstance(value, dict) or set(value) != set(space.spaces):
            raise SpaceValueError(name, f"expected an object with keys {sorted(space.spaces)}")
        return {k: from_json(s, value[k], f"{name}.{k}") for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(value, list) or len(value) != len(space.spaces):
            raise SpaceValueError(name, f"expected a list of {len(space.spaces)} parts")
        return tuple(from_json(s, v, f"{name}[{i}]")
                     for i, (s, v) in enumerate(zip(space.spaces, value, strict=True)))
    if isinstance(space, gym.spaces.Discrete):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpaceValueError(name, f"expected an integer for {space}")
        return value
    if isinstance(space, gym.spaces.Text):
        return str(value)
    try:
        arr = np.asarray(value, dtype=space.dtype)
    except (TypeError, ValueError) as err:
        raise SpaceValueError(name, f"expected numbers for {space} ({err})") from err
    if arr.shape != space.shape:
        raise SpaceValueError(name, f"expected shape {list(space.shape)} for {space}, got "
                                 f"{list(arr.shape)}")
    return arr


def to_json(value: Any) -> Any:
    """An env action as plain JSON (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value
