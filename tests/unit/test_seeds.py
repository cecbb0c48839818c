"""Seed ranges: one place names the train, validation and test ranges; reporting jobs default to
the test range, sweeps to the validation range, and the ranges' env seeds never meet."""

from policylm.jobs.benchmark import BenchmarkConfig
from policylm.jobs.compare import CompareConfig
from policylm.jobs.demo import DemoConfig
from policylm.jobs.evaluate import EvaluateConfig
from policylm.jobs.grpo_episodes import GrpoEpisodesConfig
from policylm.jobs.self_improve import SelfImproveConfig
from policylm.jobs.sweep import SweepConfig
from policylm.jobs.train_suite import TrainSuiteConfig
from policylm.platform.rollout.runner import derive_seed, plan_chunks
from policylm.platform.seeds import (
    TEST_SEED,
    TRAIN_SEED,
    VALIDATION_SEED,
    describe_seeds,
    seed_range,
)
from policylm.tune.ppo_trials import eval_seed


def test_reporting_jobs_default_to_the_test_range_and_sweeps_to_validation():
    assert EvaluateConfig().seed == TEST_SEED
    assert CompareConfig(inputs=["a", "b"]).seed == TEST_SEED
    assert BenchmarkConfig().seed == TEST_SEED
    assert TrainSuiteConfig().benchmark.seed == TEST_SEED
    assert DemoConfig().evaluate.seed == TEST_SEED
    assert GrpoEpisodesConfig().heldout_seed == TEST_SEED
    cfg = SelfImproveConfig()
    assert (cfg.seed, cfg.heldout_seed) == (TRAIN_SEED, TEST_SEED)
    assert SweepConfig().seed == VALIDATION_SEED
    assert [eval_seed(s) for s in (0, 1, 2)] == [2_000_000, 2_001_000, 2_002_000]


def test_range_names_and_report_sentences():
    assert [seed_range(s) for s in (0, 10_000, 2_000_000, 7)] == \
        ["train", "validation", "test", None]
    assert describe_seeds(2_000_000, 12) == \
        "12 env seeds from base seed 2000000: the test range (seeds that chose no setting)."
    assert "not the test range" in describe_seeds(7)
    assert "choosing settings" in describe_seeds(10_000)


def test_the_ranges_env_seeds_are_apart():
    n = 5000
    test = {derive_seed(TEST_SEED, e) for e in range(n)}
    validation = {derive_seed(VALIDATION_SEED, e) for e in range(n)}
    train = {s.seed for c in plan_chunks([("a", "random:"), ("b", "random:")], n, TRAIN_SEED, n)
             for s in c.specs}
    assert len(test) == len(validation) == n and len(train) > 2 * n - 5  # 31-bit hashes
    assert not test & validation and not test & train and not validation & train


def test_self_improve_refuses_held_out_seeds_it_trains_on_before_any_work():
    import pytest

    from policylm.platform.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="heldout_seed: gives 16 env seeds that the training"):
        config_from_dict(SelfImproveConfig, {"seed": 5, "heldout_seed": 5})
    assert config_from_dict(SelfImproveConfig, {"seed": 5}).heldout_seed == TEST_SEED
