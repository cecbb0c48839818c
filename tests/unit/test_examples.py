"""examples/grpo_cartpole.py, the in-process reference of episodic GRPO, keeps working: it
trains for its iterations and compares start and trained weights on the same held-out seeds."""

import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpo_cartpole.py"


def test_grpo_example_trains_and_compares_on_heldout_seeds(tiny_model_dir, capsys):
    spec = importlib.util.spec_from_file_location("grpo_cartpole", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    sys.modules["grpo_cartpole"] = example  # its dataclass looks its module up there
    spec.loader.exec_module(example)
    out = example.main(["--model", tiny_model_dir, "--iterations", "2", "--group-size", "2",
                        "--envs", "4", "--heldout-episodes", "4", "--target-return", "30",
                        "--lr", "0.05", "--train-steps", "64"])
    assert [r["iteration"] for r in out["iterations"]] == [0, 1] and out["version"] == 2
    assert all(r["steps_trained"] > 0 or r["filtered_groups"] == 2 for r in out["iterations"])
    start, trained, diff = (out["heldout"][k] for k in ("start", "trained", "paired_difference"))
    assert start[0] > 0 and trained[0] > 0
    assert abs(trained[0] - start[0] - diff[0]) < 1e-9  # paired on the same seeds
    assert "heldout" in capsys.readouterr().out
