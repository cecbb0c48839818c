"""Run every benchmark in bench/ (each in its own process, one after another), print one table
(benchmark, fast side, baseline, ratio, target, held?, exit code, passed?) and exit non-zero
when any missed its target or failed. A benchmark's exit code decides (each exits 1 below its
target); its JSON's ``held`` is reported, and a line saying ``held: false`` with exit code 0
counts as a miss too. This is `make bench`. Run: .venv/bin/python bench/run_all.py [names...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SKIP = {"common.py", "run_all.py", "laggy_env.py"}


def run(script: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=HERE.parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"bench": script.stem, "held": False,
                  "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["exit_code"] = proc.returncode
    return result


def failure(r: dict) -> str | None:
    """Why benchmark result ``r`` (its JSON line plus ``exit_code``) failed, or None when it
    passed: its exit code decides, so a bench that printed ``held: true`` and then crashed
    failed; ``held: false`` with exit code 0 (the two disagree) fails too."""
    if r.get("exit_code") != 0:
        return f"exit code {r.get('exit_code')}"
    if r.get("held") is False:
        return "held: false with exit code 0"
    return None


def row(r: dict) -> str:
    verdict = f"| {r.get('exit_code')} | {'no' if failure(r) else 'yes'} |"
    if "error" in r:
        return f"| `{r['bench']}` | failed: {r['error'][0][:80]} | | | | no {verdict}"
    checks = "; ".join(f"{k} {v['value']} ({v['target']})" for k, v in r["checks"].items())
    held = {True: "yes", False: "no"}.get(r.get("held"), "-")
    return (f"| `{r['bench']}` | {r['fast']}: {r['fast_value']:g} | {r['baseline']}: "
            f"{r['baseline_value']:g} | {r['ratio']} | >= {r['target']}"
            f"{'; ' + checks if checks else ''} | {held} {verdict}")


def main() -> int:
    names = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP
                     and (not names or p.stem in names))
    results = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        results.append(run(script))
        print(json.dumps(results[-1]), flush=True)
    print("\n| benchmark | fast side | baseline | ratio | target | held | exit | passed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    missed = [r["bench"] for r in results if failure(r)]
    if missed:
        print(f"\nmissed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
