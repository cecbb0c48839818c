"""The errors that mean "bad input" (config, URI, trajectory file, dataset row, an env that
is not installed, a server that does not answer, a path that does not exist): jobs print their
message, which names what was wrong and how to fix it, as one line instead of a traceback
(``--verbose`` or ``POLICYLM_DEBUG=1`` shows the traceback)."""

from __future__ import annotations

from policylm.platform.config import ConfigError
from policylm.platform.data.datasets import DatasetError
from policylm.platform.data.trajectories import TrajectoryError
from policylm.platform.engines import EngineError
from policylm.platform.envs import EnvError
from policylm.platform.envs.codecs import ActionParseError
from policylm.platform.envs.spaces import SpaceValueError
from policylm.platform.policies import PolicyError
from policylm.platform.policies.remote import RemoteError
from policylm.platform.records import PromptFormError

USER_ERRORS: tuple[type[Exception], ...] = (
    ActionParseError, ConfigError, DatasetError, EngineError, EnvError, FileNotFoundError,
    PolicyError, PromptFormError, RemoteError, SpaceValueError, TrajectoryError,
)
