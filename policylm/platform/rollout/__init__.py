"""Playing episodes in-process: the work plan and the batched episode runner (``runner``), and
its multi-agent form (``multi_agent``). Rollout actors (``policylm.actors``) are shells around
these.
"""
