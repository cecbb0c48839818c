"""Typed configs: YAML, key=value overrides, errors that name the field."""

from dataclasses import dataclass

import pytest

from policylm.jobs.collect import CollectConfig
from policylm.jobs.demo import DemoConfig
from policylm.platform.config import (
    ConfigError,
    config_from_dict,
    field,
    load_config,
    parse_overrides,
)


@dataclass
class Inner:
    rank: int = field(8, doc="LoRA rank")


@dataclass
class Outer:
    name: str = field("x", doc="a name")
    lr: float = field(1e-3, doc="learning rate")
    tags: list[str] = field(factory=list, doc="tags")
    limit: int | None = field(None, doc="optional limit")
    inner: Inner = field(factory=Inner, doc="section")


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: a\nlr: 0.5\ninner:\n  rank: 4\n")
    cfg = load_config(Outer, f, ["lr=2", "inner.rank=16", "tags=[p, q]", "limit=3"])
    assert (cfg.name, cfg.lr, cfg.inner.rank, cfg.tags, cfg.limit) == ("a", 2.0, 16, ["p", "q"], 3)


@dataclass
class Inner2:
    rank: int = field(8, doc="LoRA rank")
    alpha: int = field(16, doc="LoRA alpha")
    inner: Inner = field(factory=Inner, doc="a section inside")


@dataclass
class WithDefaults:
    section: Inner2 = field(factory=lambda: Inner2(rank=2, alpha=3, inner=Inner(rank=5)),
                            doc="a section whose config sets its own defaults")


def test_a_section_given_in_part_keeps_the_defaults_its_config_sets():
    assert load_config(WithDefaults, None, []).section == Inner2(2, 3, Inner(5))
    assert load_config(WithDefaults, None, ["section.alpha=7"]).section == Inner2(2, 7, Inner(5))
    deep = load_config(WithDefaults, None, ["section.inner.rank=9"]).section
    assert deep == Inner2(2, 3, Inner(9))
    # a section with no factory of its own keeps the class defaults
    assert load_config(Outer, None, ["inner.rank=4"]).inner == Inner(4)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'nmae'; did you mean name\?"):
        load_config(Outer, None, ["nmae=x"])
    with pytest.raises(ConfigError, match=r"inner.rnak"):
        load_config(Outer, None, ["inner.rnak=3"])


def test_wrong_types_name_the_field():
    with pytest.raises(ConfigError, match=r"inner.rank: expected an integer, got 'big'"):
        load_config(Outer, None, ["inner.rank=big"])
    with pytest.raises(ConfigError, match=r"lr: expected a number"):
        load_config(Outer, None, ["lr=[1]"])
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["oops"])


def test_missing_or_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Outer, bad)


def test_job_validation_messages():
    with pytest.raises(ConfigError, match="episodes_per_policy: must be >= 1"):
        load_config(CollectConfig, None, ["episodes_per_policy=0"])
    cfg = load_config(CollectConfig, None, ["policies=[{skill: a, uri: 'random:'}]"])
    assert cfg.policies[0].uri == "random:"
    with pytest.raises(ConfigError, match=r"policies\[0\]"):
        load_config(CollectConfig, None, ["policies=[{skill: a}]"])
    demo = load_config(DemoConfig, None, ["collect.num_workers=0", "experts.skills={weak: 1}"])
    assert demo.collect.num_workers == 0 and demo.experts.skills == {"weak": 1}


def test_mapping_override_replaces_the_mapping(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("experts:\n  skills: {weak: 25, medium: 150, expert: 500}\n")
    cfg = load_config(DemoConfig, f, ["experts.skills={weak: 1}"])
    assert cfg.experts.skills == {"weak": 1}


def test_exponent_without_a_dot_is_a_number():
    """YAML 1.1 reads 5e-5 as a string; a float field takes it as the number users meant."""
    from policylm.platform.config import ConfigError, load_config
    from policylm.platform.training.sft import SftJobConfig

    assert load_config(SftJobConfig, None, ["dataset=d", "lr=5e-5"]).lr == 5e-5
    with pytest.raises(ConfigError, match="lr: expected a number, got 'fast'"):
        load_config(SftJobConfig, None, ["dataset=d", "lr=fast"])


def test_every_example_config_loads_with_its_job():
    """Each configs/*.yaml whose first line is ``# policylm <job> --config ...`` validates as
    that job's config (so the README's commands do not drift from the code)."""
    import importlib
    import shlex
    from pathlib import Path

    from policylm.cli import JOBS
    from policylm.platform.config import load_config

    checked = 0
    for path in sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml")):
        words = shlex.split(path.read_text().splitlines()[0].lstrip("# "))
        if len(words) < 2 or words[0] != "policylm" or words[1] not in JOBS:
            continue
        module = importlib.import_module(f"policylm.jobs.{JOBS[words[1]]}")
        # the header's own overrides (the paths it names need not exist to validate)
        load_config(module.CONFIG, str(path), [w for w in words[2:] if "=" in w])
        checked += 1
    assert checked >= 12


def test_a_uri_ending_in_a_colon_stays_a_string():
    assert parse_overrides(["policy=random:", "env_options={a: 1}", "x=constant:left"]) == {
        "policy": "random:", "env_options": {"a": 1}, "x": "constant:left"}


def test_a_key_that_moved_into_a_section_is_named_where_it_is(tmp_path):
    """The Ray Train keys live in ``train:``; given at the top level (override or YAML) they are
    refused with the dotted name to write instead."""
    from policylm.jobs.grpo import GrpoJobConfig
    from policylm.jobs.sft import SftJobConfig

    with pytest.raises(ConfigError, match=r"'num_workers' is in the train: section now; write "
                                          r"train\.num_workers="):
        load_config(SftJobConfig, None, ["dataset=d", "num_workers=2"])
    f = tmp_path / "g.yaml"
    f.write_text("storage_path: s3://b/p\n")
    with pytest.raises(ConfigError, match=r"train\.storage_path"):
        load_config(GrpoJobConfig, f, ["dataset=d"])
    cfg = load_config(SftJobConfig, None, ["dataset=d", "train.num_workers=2",
                                           "train={num_workers: 3, placement: SPREAD}"])
    assert (cfg.train.num_workers, cfg.train.placement) == (3, "SPREAD")
    with pytest.raises(ConfigError, match=r"train\.placement: use one of PACK"):
        load_config(SftJobConfig, None, ["dataset=d", "train.placement=EVERYWHERE"])


def test_the_two_grpo_commands_refuse_each_others_keys():
    """grpo trains over dataset states, grpo-episodes over played episodes: each refuses the
    other's keys (mode=episodes names the command to use), and resume names why it is not
    taken."""
    from policylm.jobs.grpo import GrpoJobConfig
    from policylm.jobs.grpo_episodes import GrpoEpisodesConfig

    with pytest.raises(ConfigError, match="'mode': online GRPO over episodes is its own command "
                                          "now: policylm grpo-episodes"):
        load_config(GrpoJobConfig, None, ["mode=episodes", "dataset=d"])
    with pytest.raises(ConfigError, match="unknown config key 'iterations'"):
        load_config(GrpoJobConfig, None, ["iterations=3", "dataset=d"])
    with pytest.raises(ConfigError, match="unknown config key 'dataset'"):
        load_config(GrpoEpisodesConfig, None, ["dataset=d"])
    with pytest.raises(ConfigError, match="'resume': grpo-episodes starts over"):
        load_config(GrpoEpisodesConfig, None, ["resume=true"])
    cfg = load_config(GrpoEpisodesConfig, None, ["iterations=3", "lr=1e-4"])
    assert (cfg.iterations, cfg.lr, cfg.env_id) == (3, 1e-4, "CartPole-v1")
    with pytest.raises(ConfigError, match="lr: must be > 0"):  # the shared settings' checks
        load_config(GrpoEpisodesConfig, None, ["lr=0"])
    with pytest.raises(ConfigError, match="micro_tokens: must be >= 1"):
        load_config(GrpoEpisodesConfig, None, ["micro_tokens=0"])
    with pytest.raises(ConfigError, match="step_gamma: must be in \\(0, 1\\]"):
        load_config(GrpoEpisodesConfig, None, ["step_advantage=1", "step_gamma=0"])
    with pytest.raises(ConfigError, match="step_advantage: must be >= 0"):
        load_config(GrpoEpisodesConfig, None, ["step_advantage=-1"])



def test_train_suite_grpo_stage_takes_its_env_and_start_from_the_stages_before():
    from policylm.jobs.train_suite import TrainSuiteConfig
    from policylm.platform.evaluation.suites import get_suite

    assert get_suite("balrog-babyai").rl_task().env_id == "BabyAI-MixedTrainLocal-v0"
    assert get_suite("babyai-mixed-test").rl_task().env_id == "BabyAI-MixedTestLocal-v0"
    assert get_suite("balrog-crafter").rl_task().env_options == {"length": 2000}  # its one task
    cfg = config_from_dict(TrainSuiteConfig, {"grpo": {"iterations": 2}})
    assert cfg.grpo.iterations == 2
    assert config_from_dict(TrainSuiteConfig, {}).grpo.iterations == 0  # no GRPO stage
    for key, value in (("env_id", "CartPole-v0"), ("target_return", 5.0), ("adapter", "a")):
        with pytest.raises(ConfigError, match=f"grpo.{key}: comes from the suite"):
            config_from_dict(TrainSuiteConfig, {"grpo": {"iterations": 2, key: value}})
    with pytest.raises(ConfigError, match=r"task_episodes: \['fly'\] not in balrog-babyai"):
        config_from_dict(TrainSuiteConfig, {"task_episodes": {"fly": 3}})
    with pytest.raises(ConfigError, match="task_episodes: give each task a whole number"):
        config_from_dict(TrainSuiteConfig, {"task_episodes": {"open": 0}})
    with pytest.raises(ConfigError, match=r"grpo\.group_size: must be >= 2"):  # its own checks
        config_from_dict(TrainSuiteConfig, {"grpo": {"iterations": 2, "group_size": 1}})
