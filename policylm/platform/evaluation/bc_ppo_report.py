"""The bc-ppo report: frames to threshold per method and seed, curves, heatmaps, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policylm.platform.evaluation.reports import (
    markdown_table,
    plot_return_vs_frames,
    plot_visitation,
)
from policylm.platform.evaluation.sample_efficiency import (
    frames_to_threshold,
    grid_shape,
    median_or_none,
)

# the methods that start PPO from a BC policy: the prefix of their demonstrator's keys in
# metrics.json (demos, bc) and the summary key of their ratio to scratch
CLONED = (("bc-ppo", "", "bc_over_scratch"),
          ("bc-ppo-baseline", "baseline_", "baseline_over_scratch"))


def summarise(results: list[dict], threshold: float, budget: int | None = None) -> dict:
    """Per method: frames to threshold per seed and their median, final evaluation returns; and
    the ratio of each BC-started method's median to scratch's (``bc_over_scratch``,
    ``baseline_over_scratch``; at most 0.5 meets the bar). When scratch's median never reached
    the threshold within ``budget`` frames, the ratio is only bounded: ``<key>_below`` is the
    method's median over the budget."""
    methods: dict[str, dict] = {}
    for r in results:
        m = methods.setdefault(r["method"], {"seeds": {}, "final": [], "before": []})
        m["seeds"][str(r["seed"])] = frames_to_threshold(r["curve"], threshold)
        m["final"].append(r["eval_after"]["mean"])
        m["before"].append(r["eval_before"]["mean"])
    for m in methods.values():
        m["median_frames"] = median_or_none(list(m["seeds"].values()))
        m["final_mean"], m["final_std"] = float(np.mean(m["final"])), float(np.std(m["final"]))
        # across seeds: the standard error of the mean final return (None with one seed)
        n = len(m["final"])
        m["final_se"] = float(np.std(m["final"], ddof=1) / np.sqrt(n)) if n > 1 else None
        m["before_mean"] = float(np.mean(m["before"]))
    out: dict[str, Any] = {"methods": methods}
    scratch = methods.get("scratch")
    for method, _, key in CLONED:
        frames = methods.get(method, {}).get("median_frames")
        if frames is None or scratch is None:
            continue
        if scratch["median_frames"]:
            out[key] = frames / scratch["median_frames"]
        elif scratch["median_frames"] is None and budget:
            out[f"{key}_below"] = frames / budget
    return out


def _frames(v: float | None, budget: int) -> str:
    return f"> {budget:,} (not reached)" if v is None else f"{int(v):,}"


def _imitation_lines(cfg: Any, demos: dict | None, bc: dict | None, method: str) -> list[str]:
    """The report's lines on one demonstrator's demonstrations and on its BC policy."""
    lines: list[str] = []
    if demos:
        a, k = demos["all"], demos["kept"]
        lines += [f"Demonstrations for `{method}` from `{demos['policy']}`: {a['episodes']} "
                  f"episodes, success rate {a['success_rate']:.2f}, mean return "
                  f"{a['mean_return']:.3f}; kept {k['episodes']} ({k['frames']} frames, mean "
                  f"return {k['mean_return']:.3f}).", ""]
    if bc:
        held = "n/a (too few kept episodes to hold one out)" if bc["accuracy"] is None else (
            f"{bc['accuracy']:.3f} over {bc['rows']} steps of "
            f"{demos['heldout_episodes']} held-out demonstration episodes (chance "
            f"{bc['chance']:.3f}, majority action {bc['majority']:.3f})")
        lines += [f"BC for `{method}` (RLlib, {cfg.bc_steps} steps): accuracy on the "
                  f"demonstrated actions {held}; on its {demos['trained_episodes']} training "
                  f"episodes {bc['train_accuracy']:.3f}; loss {bc['loss_first']:.3f} -> "
                  f"{bc['loss_last']:.3f}.", ""]
    return lines


def write_report(cfg: Any, run_dir: Path, results: list[dict], metrics: dict) -> dict:
    """Write the plots and ``report.md``; returns the summary that joins ``metrics.json``."""
    from policylm.platform.envs import make_adapter

    summary = summarise(results, cfg.threshold, cfg.frames)
    summary["report_thresholds"] = {
        f"{t:g}": {name: m["median_frames"] for name, m in summarise(
            results, t, cfg.frames)["methods"].items()} for t in cfg.report_thresholds}
    curves: dict[str, list] = {}
    for r in results:
        curves.setdefault(r["method"], []).append(r["curve"])
    plot_return_vs_frames(curves, run_dir / "return_vs_frames.png",
                          f"{cfg.env_id}: PPO return against frames", cfg.threshold)
    grid = grid_shape(make_adapter(cfg.env_id, **cfg.env_options))
    labels = ("x", "y") if grid else ("cart position", "pole angle")
    for method in curves:
        pts = np.concatenate([np.load(Path(r["out_dir"]) / "positions.npy").reshape(-1, 2)
                              for r in results if r["method"] == method])
        plot_visitation(pts, run_dir / f"visitation_{method}.png",
                        f"{method}: positions in the final evaluation ({cfg.env_id})",
                        grid, labels)
    lines = [f"# bc-ppo on {cfg.env_id}", ""]
    for method, prefix, _ in CLONED:
        lines += _imitation_lines(cfg, metrics.get(f"{prefix}demos"),
                                  metrics.get(f"{prefix}bc"), method)
    src = metrics.get("transfer_source")
    if src:
        lines += [f"Transfer source: PPO on {src['env_id']} for {src['frames']:,} frames "
                  f"(evaluation return {src['eval_return']:.3f}).", ""]
    lines += [f"Frames to reach return {cfg.threshold:g} (budget {cfg.frames:,} per run), every "
              "method measured the same way: the policy's mean return (actions sampled from its "
              f"softmax) over {cfg.eval_episodes} evaluation episodes (the same env seeds each "
              "time, in the test range: seeds 2,000,000 + 1,000 x the trial's seed + episode), "
              "before PPO (frame 0) and every "
              f"{cfg.eval_interval or cfg.frames // 8:,} frames:", ""]
    methods = summary["methods"]
    seeds = sorted({s for m in methods.values() for s in m["seeds"]}, key=int)
    rows = [[name, *(_frames(m["seeds"].get(s), cfg.frames) for s in seeds),
             _frames(m["median_frames"], cfg.frames), f"{m['before_mean']:.3f}",
             "n/a" if m["final_se"] is None else f"{m['final_mean']:.3f} ± {m['final_se']:.3f}"]
            for name, m in methods.items()]
    lines += [markdown_table(["method", *(f"seed {s}" for s in seeds), "median",
                              "return before PPO", "final return ± s.e. (seeds)"], rows), ""]
    for method, _, key in CLONED:
        if key in summary:
            ratio = summary[key]
            lines += [f"{method} needs {ratio:.2f}x the frames of scratch (median); the bar is "
                      f"<= 0.5: {'met' if ratio <= 0.5 else 'not met'}.", ""]
        elif f"{key}_below" in summary:
            ratio = summary[f"{key}_below"]
            lines += [f"{method} needs under {ratio:.2f}x the frames of scratch (median): "
                      f"scratch did not reach {cfg.threshold:g} within {cfg.frames:,} frames; "
                      f"the bar is <= 0.5: {'met' if ratio <= 0.5 else 'not shown'}.", ""]
    if summary["report_thresholds"]:
        names = list(methods)
        lines += ["Median frames to other returns (the same curves):", "", markdown_table(
            ["return", *names], [[t, *(_frames(by[n], cfg.frames) for n in names)]
                                 for t, by in summary["report_thresholds"].items()]), ""]
    lines += ["![return vs frames](return_vs_frames.png)", ""]
    lines += [f"![{m}](visitation_{m}.png)" for m in curves]
    lines += ["", "TensorBoard: `tensorboard --logdir " + str(run_dir / "trials") + "`"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return summary
