"""Benchmark suites (no Ray): named task lists, BALROG's progression metric and its scoring, and
the published figures a run is set next to.

BALROG (balrog-ai/BALROG) scores an episode by its *progression* in [0, 1]: BabyAI 1 when the
mission is done (reward > 0) else 0; Crafter the share of its 22 achievements unlocked. A suite's
score pools every episode of every task: the mean progression, with the standard error BALROG's
``summarize_env_progressions`` uses (population std / sqrt(episodes)), in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from policylm.platform.envs.babyai import MIXED_IDS, TASK_IDS, TEST_TASK_IDS

CRAFTER_ACHIEVEMENTS = 22


@dataclass(frozen=True)
class Task:
    """One task of a suite: its name, the env it plays and BALROG's name for it."""

    name: str
    env_id: str
    balrog_name: str
    env_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """A published score of a suite: model, percent, its standard error (None: not published)
    and where it comes from."""

    model: str
    score: float
    se: float | None
    source: str


@dataclass(frozen=True)
class Suite:
    """Tasks played ``episodes`` times each; ``metric`` is ``success`` (BabyAI) or
    ``achievements`` (Crafter's share of 22)."""

    name: str
    tasks: tuple[Task, ...]
    episodes: int
    metric: str
    references: tuple[Reference, ...] = ()
    notes: str = ""
    heldout: str = ""  # the suite of the same tasks on what training never names (or none)
    mixed: Task | None = None  # one env that plays every task (online RL trains on it)

    def rl_task(self) -> Task:
        """The env online RL trains on for the whole suite: the mixed level, else the one
        task."""
        if self.mixed is not None:
            return self.mixed
        if len(self.tasks) == 1:
            return self.tasks[0]
        raise ValueError(f"suite {self.name} has {len(self.tasks)} tasks and no env that plays "
                         "them all, so online RL cannot train on the suite as one env")


LEADERBOARD = ("BALROG leaderboard (balrogai.com), naive agent, temperature 0, 16 steps of "
               "history")
SUITES: dict[str, Suite] = {
    "balrog-babyai": Suite(
        "balrog-babyai",
        tuple(Task(task, env_id, f"BabyAI-MixedTrainLocal-v0/{task}")
              for task, env_id in TASK_IDS.items()),
        episodes=10, metric="success",
        references=(Reference("Llama-3.2-1B-Instruct", 8.0, 3.8, LEADERBOARD),
                    Reference("Llama-3.2-3B-Instruct", 20.0, 5.7, LEADERBOARD),
                    Reference("Llama-3.1-8B-Instruct", 36.0, 6.8, LEADERBOARD),
                    Reference("Llama-3.1-70B-Instruct", 73.2, None, LEADERBOARD),
                    Reference("DeepSeek-R1", 74.0, None, LEADERBOARD),
                    Reference("Grok-4", 76.0, None, LEADERBOARD),
                    Reference("GPT-4o", 77.6, None, LEADERBOARD),
                    Reference("Gemini-2.5-Pro", 80.0, 5.7, LEADERBOARD)),
        notes=("BabyAI-Text's MixedTrainLocal level, re-implemented on the minigrid package "
               "(policylm.platform.envs.babyai_levels), num_dists=0 as in BALROG's config. The "
               "observation text is BabyAI-Text's; the mission and the observation share one user "
               "turn (BALROG puts the mission in its instruction message); actions are parsed by "
               "policylm's codec (BALROG falls back to 'go forward' on an invalid answer)."),
        heldout="babyai-mixed-test",
        mixed=Task("mixed", MIXED_IDS["train"], "BabyAI-MixedTrainLocal-v0"),
    ),
    "babyai-mixed-test": Suite(
        "babyai-mixed-test",
        tuple(Task(task, env_id, f"BabyAI-MixedTestLocal-v0/{task}")
              for task, env_id in TEST_TASK_IDS.items()),
        episodes=10, metric="success",
        notes=("BabyAI-Text's MixedTestLocal level (as in BabyAI-Text/GLAM) with BALROG's five "
               "tasks and num_dists=0: every mission names only the colour-object pairs "
               "MixedTrainLocal holds out (yellow box, red key, green ball; red or grey locked "
               "doors), so a policy trained on balrog-babyai has never read these missions."),
        mixed=Task("mixed", MIXED_IDS["test"], "BabyAI-MixedTestLocal-v0"),
    ),
    "balrog-crafter": Suite(
        "balrog-crafter",
        (Task("default", "Crafter", "crafter/default", {"length": 2000}),),
        episodes=10, metric="achievements",
        references=(Reference("Llama-3.2-1B-Instruct", 12.7, 1.9, LEADERBOARD),
                    Reference("Llama-3.2-3B-Instruct", 17.3, None, LEADERBOARD),
                    Reference("Llama-3.1-8B-Instruct", 25.5, None, LEADERBOARD),
                    Reference("GPT-4o", 33.1, None, LEADERBOARD)),
        notes=("Crafter with 2000 steps per episode as in BALROG; policylm's Crafter text is "
               "its own (BALROG's lists the nearby objects in its own words)."),
    ),
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``; the error lists the known ones."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]


def progression(metric: str, episode_return: float, achievements: int | None = None) -> float:
    """One episode's progression in [0, 1]: ``success`` 1.0 when the return is positive;
    ``achievements`` the share of Crafter's 22 unlocked."""
    if metric == "success":
        return 1.0 if episode_return > 0 else 0.0
    if metric == "achievements":
        if achievements is None:
            raise ValueError("the achievements metric needs the episode's achievement count")
        return min(achievements, CRAFTER_ACHIEVEMENTS) / CRAFTER_ACHIEVEMENTS
    raise ValueError(f"unknown metric {metric!r}; success or achievements")


def score(values: Sequence[float]) -> dict:
    """BALROG's summary of progressions: ``{"episodes", "score", "se"}`` in percent, s.e. the
    population standard deviation over sqrt(episodes) (None under two episodes, None score
    when there are none)."""
    n = len(values)
    if not n:
        return {"episodes": 0, "score": None, "se": None}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return {"episodes": n, "score": 100 * mean, "se": 100 * sd / math.sqrt(n) if n > 1 else None}


def suite_scores(suite: Suite, progressions: dict[str, Sequence[float]]) -> dict:
    """Per task and overall (every episode pooled) scores from ``{task: [progression, ...]}``."""
    tasks = {t.name: score(progressions.get(t.name, [])) for t in suite.tasks}
    pooled = [v for t in suite.tasks for v in progressions.get(t.name, [])]
    return {"tasks": tasks, "overall": score(pooled)}
