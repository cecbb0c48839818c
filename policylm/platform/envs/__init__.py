"""Environments as text: the adapter contract, the generic adapter, one module per env family
(``cartpole``, ``minigrid``, ``crafter``, ``mettagrid``, ``mujoco``), action codecs
(``codecs``), observation and action values as JSON (``spaces``) and scripted bots
(``minigrid_bot``; CartPole's and MettaGrid's live with their families).
"""

from policylm.platform.envs.adapter import (
    EnvAdapter,
    EnvError,
    dumps_json,
    format_number,
    generic_adapter,
    generic_encoders,
    gym_kwargs,
    probe_spaces,
)
from policylm.platform.envs.make import FlatObsEnv, make_adapter

__all__ = ["EnvAdapter", "EnvError", "FlatObsEnv", "dumps_json", "format_number",
           "generic_adapter", "generic_encoders", "gym_kwargs", "make_adapter", "probe_spaces"]
