"""bench/run_all.py (``make bench``): each benchmark's exit code decides, not its JSON's
``held`` (a bench that printed its line and then crashed failed)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def line(bench, held, exit_code):
    return {"bench": bench, "fast": "fast", "fast_value": 2.0, "baseline": "base",
            "baseline_value": 1.0, "ratio": 2.0, "target": 1.5, "checks": {}, "held": held,
            "seconds": 1.0, "exit_code": exit_code}


CASES = {  # bench -> (its result, passes?)
    "collect_overhead": (line("collect_overhead", True, 0), True),
    "collect_scaling": (line("collect_scaling", True, 1), False),  # held, then crashed
    "history_cache": (line("history_cache", False, 0), False),  # says it missed: no pass
    "score_packing": ({"bench": "score_packing", "held": False, "error": ["Killed"],
                       "seconds": 1.0, "exit_code": -9}, False),
}


def test_exit_code_decides(run_all, monkeypatch, capsys):
    monkeypatch.setattr(run_all, "run", lambda script: dict(CASES[script.stem][0]))
    monkeypatch.setattr(sys, "argv", ["run_all.py", *CASES])
    assert run_all.main() == 1
    captured = capsys.readouterr()
    missed = captured.err.strip().splitlines()[-1]
    assert missed == "missed: collect_scaling, history_cache, score_packing"
    table = {r.split("|")[1].strip(" `"): r for r in captured.out.splitlines()
             if r.startswith("| `")}
    assert table["collect_scaling"].endswith("| yes | 1 | no |")  # held, exit 1: failed
    assert table["history_cache"].endswith("| no | 0 | no |")
    assert table["score_packing"].endswith("| no | -9 | no |")
    assert table["collect_overhead"].endswith("| yes | 0 | yes |")
    for bench, (result, passes) in CASES.items():
        assert (run_all.failure(result) is None) == passes, bench


def test_all_passing_exits_zero(run_all, monkeypatch):
    monkeypatch.setattr(run_all, "run", lambda script: line(script.stem, True, 0))
    monkeypatch.setattr(sys, "argv", ["run_all.py", "collect_overhead", "serve_load"])
    assert run_all.main() == 0


def test_finish_prints_peak_memory_and_fails_over_its_limit(monkeypatch, capsys):
    """Every bench line carries ``peak_rss_gb``; a bench over the memory limit exits 1 even
    when its ratio holds."""
    import json

    sys.path.insert(0, str(BENCH))
    import common

    for limit, code in ((100.0, 0), (0.001, 1)):
        monkeypatch.setattr(common, "MAX_PEAK_RSS_GB", limit)
        with pytest.raises(SystemExit) as done:
            common.finish("b", ("fast", 2.0), ("base", 1.0), 1.5)
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert done.value.code == code and out["ratio"] == 2.0
        assert out["peak_rss_gb"]["self"] > 0.01
        assert out["checks"]["peak_rss_gb"]["held"] is (code == 0)
