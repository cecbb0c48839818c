"""Sweep results and search spaces without running Tune: ordering by the objective, the best
trial, the space syntax and its errors, the results table files."""

import csv

import pytest

from policylm.platform.config import ConfigError
from policylm.platform.evaluation.sweeps import best_row, sort_rows

ROWS = [{"lr": 1e-3, "mean_return": 40.0}, {"lr": 5e-4, "mean_return": None},
        {"lr": 1e-4, "mean_return": 120.5}, {"lr": 2e-3, "mean_return": float("nan")},
        {"lr": 3e-4, "mean_return": 80}]


def test_sort_and_best():
    assert [r["lr"] for r in sort_rows(ROWS, "mean_return", "max")] == \
        [1e-4, 3e-4, 1e-3, 5e-4, 2e-3]  # 120.5, 80, 40, then the trials without a value
    assert [r["lr"] for r in sort_rows(ROWS, "mean_return", "min")][:3] == [1e-3, 3e-4, 1e-4]
    assert best_row(ROWS, "mean_return", "max")["lr"] == 1e-4
    assert best_row([{"mean_return": None}], "mean_return") is None
    with pytest.raises(ValueError, match="max or min"):
        sort_rows(ROWS, "mean_return", "best")


def test_search_space_syntax():
    from ray.tune.search.sample import Float, Integer

    from policylm.tune.trials import search_space

    space = search_space({"lora.rank": [4, 8], "lr": {"min": 1e-5, "max": 1e-3, "log": True},
                          "lora.alpha": {"min": 8, "max": 64, "int": True}})
    assert space["lora.rank"] == {"grid_search": [4, 8]}
    assert isinstance(space["lr"], Float) and (space["lr"].lower, space["lr"].upper) == \
        (1e-5, 1e-3)
    assert isinstance(space["lora.alpha"], Integer) and space["lora.alpha"].upper == 65
    with pytest.raises(ConfigError, match=r"space\.lr: need min < max"):
        search_space({"lr": {"min": 0, "max": 1e-3, "log": True}})
    with pytest.raises(ConfigError, match=r"space\.lr: write a list"):
        search_space({"lr": 0.001})


def test_sweep_config_errors():
    from policylm.jobs.sweep import SweepConfig
    from policylm.platform.config import config_from_dict

    with pytest.raises(ConfigError, match="target sweep sweeps target_return only"):
        config_from_dict(SweepConfig, {"space": {"lr": [1e-3]}})
    with pytest.raises(ConfigError, match=r"sft\.dataset"):
        config_from_dict(SweepConfig, {"kind": "train", "space": {"lr": [1e-3]}})
    with pytest.raises(ConfigError, match="kind: use one of target, train"):
        config_from_dict(SweepConfig, {"kind": "grid"})


def test_results_files(tmp_path):
    from policylm.platform.evaluation.reports import plot_objective, write_results

    rows = sort_rows(ROWS, "mean_return")
    write_results(rows, tmp_path / "r.csv", tmp_path / "r.md")
    with open(tmp_path / "r.csv") as f:
        got = list(csv.DictReader(f))
    assert [g["lr"] for g in got][:2] == ["0.0001", "0.0003"]
    md = (tmp_path / "r.md").read_text().splitlines()
    assert md[0] == "| lr | mean_return |" and md[2] == "| 0.0001 | 120.50 |"
    assert plot_objective(rows, ["lr"], "mean_return", tmp_path / "o.png").stat().st_size > 0
