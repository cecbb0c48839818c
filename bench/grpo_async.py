"""Episodic GRPO asynchronous (``max_staleness=1``: the actors play iteration k+1 while the
learner trains on iteration k) against synchronous (``max_staleness=0``), the same config
otherwise, one after the other in one run: iterations per hour of each job's training loop
after its first iteration (which nothing can overlap; the rate with it is printed too), and the
return of each final adapter on the same held-out env seeds (paired).

The env is CartPole behind a per-step wait (``laggy_env.py``, ``--latency`` seconds): an env
served over a network, where the rollout waits rather than computes, which is where playing
ahead pays. ``--latency 0`` is plain CartPole on this machine's 2 cores, where both sides
compute on the same cores and overlap cannot pay (the figure is printed; the script exits 1).

The last line is one JSON object: ``ratio`` (async / sync median iterations per hour, target
>= 1.3)
and the check ``return_gap_bound`` (async minus sync held-out return, plus 2 standard errors of
the paired difference: >= 0 means async is not worse beyond noise). Exits 1 below either.
Run: .venv/bin/python bench/grpo_async.py [--latency 0.15 --iterations 5 --episodes 16
--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import MAX_PEAK_RSS_GB, finish, median

ENV_ID = "laggy_env:LaggyCartPole-v1"


def train(root: Path, staleness: int, args: argparse.Namespace) -> dict:
    """One episodic GRPO job in a fresh process (as from the command line: the job sets how
    torch's threads wait before torch is first imported); its metrics."""
    import json
    import subprocess

    out = root / f"staleness-{staleness}"
    subprocess.run([sys.executable, __file__, "--job", str(staleness), "--out", str(out),
                    *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                      if k not in ("job", "out"))], check=True)
    return json.loads((out / "metrics.json").read_text()) | {"adapter": str(out / "adapter")}


def job_peak(runs: list[dict]) -> float | None:
    """The largest peak resident memory (GB) any side's job of any repeat reported; None if
    none could."""
    known = [r["peak_rss_gb"]["largest"] for pair in runs for r in pair.values()
             if r["peak_rss_gb"]["largest"] is not None]
    return max(known) if known else None


def job(args: argparse.Namespace) -> None:
    """The job of one side (``--job <max_staleness>``), run by :func:`train`."""
    from policylm.jobs.grpo_episodes import GrpoEpisodesConfig
    from policylm.jobs.grpo_episodes import main as grpo
    from policylm.platform.config import config_from_dict

    grpo(config_from_dict(GrpoEpisodesConfig, {
        "model": args.model, "env_id": ENV_ID,
        "env_options": {"env_kwargs": {"latency": args.latency}},
        "iterations": args.iterations, "seeds_per_iteration": args.seeds, "group_size": 4,
        "target_return": 500, "temperature": 1.0, "lr": 5e-5, "train_steps": args.train_steps,
        "rollout_workers": 2, "envs_per_worker": 8, "max_staleness": args.job, "seed": 0,
        "out": args.out}))


def held_out(root: Path, adapters: dict[str, str], args: argparse.Namespace) -> dict:
    """Returns of each adapter on the same held-out seeds (no latency: the text is the same),
    played by ``policylm compare``: (mean, s.e.) each, and the paired ``gap`` (the second
    minus the first)."""
    from policylm.jobs import compare

    summaries = compare.main(compare.CompareConfig(
        inputs=[f"hf://{args.model}?adapter={a}&target_return=500&temperature=1.0"
                for a in adapters.values()], labels=list(adapters), env_id=ENV_ID,
        env_options={"env_kwargs": {"latency": 0.0}}, episodes=args.episodes, num_workers=2,
        envs_per_worker=8, seed=1_000_003, out=str(root / "held-out")))["summaries"]
    first, second = list(adapters)
    gap = summaries[second][f"difference_vs_{first}"]
    return {**{k: (summaries[k]["return"]["mean"], summaries[k]["return"]["se"])
               for k in adapters},
            "gap": (gap["mean"], gap["se"]), "episodes": gap["pairs"]}


def steady_rate(iterations: list[dict]) -> float:
    """Iterations per hour after the first (which nothing can overlap: both sides play it and
    then train on it), the rate of a long run."""
    walls = [i["wall_s"] for i in iterations]
    return 3600 * (len(walls) - 1) / (walls[-1] - walls[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per env step")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=4, help="groups of 4 episodes per iteration")
    parser.add_argument("--train-steps", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=16, help="held-out episodes per side")
    parser.add_argument("--repeats", type=int, default=3, help="sync/async pairs, interleaved")
    parser.add_argument("--job", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job is not None:
        return job(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = [{label: train(root / f"repeat-{r}", staleness, args)
                  for label, staleness in (("sync", 0), ("async", 1))}
                 for r in range(args.repeats)]
        ret = held_out(root, {k: r["adapter"] for k, r in pairs[0].items()}, args)
    runs = pairs[0]  # the repeat whose adapters played the held-out seeds
    rates = {k: [steady_rate(p[k]["iterations"]) for p in pairs] for k in ("sync", "async")}
    ratios = [a / s for a, s in zip(rates["async"], rates["sync"], strict=True)]
    minutes = {k: r["wall_s"] / 60 for k, r in runs.items()}
    gap, gap_se = ret["gap"]
    finish("grpo_async",
           ("async (max_staleness=1) iterations/hour, median", median(rates["async"])),
           ("sync (max_staleness=0) iterations/hour, median", median(rates["sync"])), target=1.3,
           checks={"return_gap_bound": (gap + 2 * gap_se, 0.0)},
           # each side's job ran in its own process: its metrics hold its peak (the learner's)
           limits={"job_peak_rss_gb": (job_peak(pairs), MAX_PEAK_RSS_GB)},
           job_peak_rss_gb={k: r["peak_rss_gb"] for k, r in runs.items()},
           repeats=args.repeats, ratio_per_repeat=[round(r, 3) for r in ratios],
           ratio_spread=[round(min(ratios), 3), round(max(ratios), 3)],
           iterations_per_hour={k: [round(v, 2) for v in vs] for k, vs in rates.items()},
           latency_s=args.latency, iterations=args.iterations,
           episodes_per_iteration=4 * args.seeds, train_steps=args.train_steps,
           wall_minutes={k: round(v, 2) for k, v in minutes.items()},
           iterations_per_hour_with_first={k: r["iterations_per_hour"] for k, r in runs.items()},
           first_iteration_s={k: r["iterations"][0]["wall_s"] for k, r in runs.items()},
           held_out_return={k: {"mean": round(ret[k][0], 2), "se": round(ret[k][1], 2)}
                            for k in ("sync", "async")},
           return_gap={"mean": round(gap, 2), "se": round(gap_se, 2)},
           held_out_episodes=ret["episodes"],
           return_per_wall_minute={k: round(ret[k][0] / minutes[k], 2) for k in minutes},
           mean_staleness=[i["staleness"] for i in runs["async"]["iterations"]],
           importance_weight=[i["importance_weight"] for i in runs["async"]["iterations"]],
           rollout_s={k: [i["rollout_s"] for i in r["iterations"]] for k, r in runs.items()},
           train_s={k: [i["train_s"] for i in r["iterations"]] for k, r in runs.items()})


if __name__ == "__main__":
    main()
