"""The errors that mean "bad input" (config, URI, trajectory file, dataset row): jobs print
their message, which names what was wrong and how to fix it, instead of a traceback."""

from __future__ import annotations

from policylm.platform.config import ConfigError
from policylm.platform.data.datasets import DatasetError
from policylm.platform.data.trajectories import TrajectoryError
from policylm.platform.engines import EngineError
from policylm.platform.envs.codecs import ActionParseError
from policylm.platform.policies import PolicyError

USER_ERRORS: tuple[type[Exception], ...] = (
    ActionParseError, ConfigError, DatasetError, EngineError, PolicyError, TrajectoryError,
)
