"""Policies (on the contract of ``policylm.platform.policy``): simple policies (``base``), the
URI table (``uri``), network checkpoints (``network``), external PyTorch modules (``external``),
the return-conditioned LLM policy (``llm``) and policies behind a server (``remote``).
"""

from policylm.platform.policies.base import (
    BoxPolicy,
    ConstantPolicy,
    LogitsPolicy,
    MixPolicy,
    PolicyError,
    RandomPolicy,
    choose,
)
from policylm.platform.policies.uri import (
    absolute_paths,
    check_uri,
    policy_from_uri,
    split_uri,
    with_params,
)
from policylm.platform.policy import Policy, as_policy

__all__ = ["BoxPolicy", "ConstantPolicy", "LogitsPolicy", "MixPolicy", "Policy", "PolicyError",
           "RandomPolicy", "absolute_paths", "as_policy", "check_uri", "choose",
           "policy_from_uri", "split_uri", "with_params"]
