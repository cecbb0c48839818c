"""Training without Ray: SFT settings and trainer (``sft``), GRPO reward functions
(``rewards``), the clipped policy-gradient loss (``policy_gradient``) and online episodic GRPO
(``episodic_grpo``).
"""
