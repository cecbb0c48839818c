"""Policies: the contract and simple policies (``base``), the URI table (``uri``), network
checkpoints (``network``), external PyTorch modules (``external``), the return-conditioned LLM
policy (``llm``) and policies behind a server (``remote``).
"""

from policylm.platform.policies.base import (
    ConstantPolicy,
    LogitsPolicy,
    MixPolicy,
    Policy,
    PolicyError,
    RandomPolicy,
    choose,
)
from policylm.platform.policies.uri import absolute_paths, policy_from_uri, split_uri, with_params

__all__ = ["ConstantPolicy", "LogitsPolicy", "MixPolicy", "Policy", "PolicyError",
           "RandomPolicy", "absolute_paths", "choose", "policy_from_uri", "split_uri",
           "with_params"]
