"""Env seed ranges: which episodes may train, which may choose a setting, which may be reported.

Every job plays env seeds derived from one base seed (``derive_seed(base, e)`` for episode
``e``, :mod:`policylm.platform.rollout.runner`), so a base seed names a range of env seeds. Three
ranges keep the roles apart:

- ``train`` (base :data:`TRAIN_SEED`): collected demonstrations, self-improve's play, GRPO's
  training groups, PPO.
- ``validation`` (base :data:`VALIDATION_SEED`): where settings are chosen (a sweep's target,
  temperature, guidance, learning rate, which checkpoint). Sweeps and selection default to it.
- ``test`` (base :data:`TEST_SEED`): the figures a job reports (evaluate, compare, benchmark,
  the demo's evaluation, GRPO's and self-improve's held-out comparison, bc-ppo's evaluation).
  Nothing is chosen on them; every reporting job defaults to it and its ``report.md`` says which
  range it played.
"""

from __future__ import annotations

TRAIN_SEED = 0
VALIDATION_SEED = 10_000  # the CartPole demo's temperature and guidance, and GRPO's learning
                          # rate, were chosen on this range (2026-11/12)
TEST_SEED = 2_000_000

RANGES = {"train": TRAIN_SEED, "validation": VALIDATION_SEED, "test": TEST_SEED}


def seed_range(base_seed: int) -> str | None:
    """The name of the range ``base_seed`` starts (``train``, ``validation``, ``test``), or
    None for a base seed of the user's own."""
    return next((name for name, base in RANGES.items() if base == base_seed), None)


def describe_seeds(base_seed: int, episodes: int | None = None) -> str:
    """One sentence for a report: the range the env seeds come from and what it is for."""
    name = seed_range(base_seed)
    count = f"{episodes} env seeds" if episodes is not None else "Env seeds"
    what = {"train": "the train range (seeds that training and demonstrations use)",
            "validation": "the validation range (seeds for choosing settings, not for "
                          "reporting)",
            "test": "the test range (seeds that chose no setting)"}
    where = what[name] if name else "a base seed of no named range (not the test range)"
    return f"{count} from base seed {base_seed}: {where}."
