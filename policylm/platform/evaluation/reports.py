"""Plots and markdown reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from textwrap import fill
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: object, fig: object, path: str | Path) -> Path:
    """Lay out, write as PNG and close a figure."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_target_vs_actual(metrics: dict, path: str | Path, title: str,
                          data_range: tuple[float, float] | None = None,
                          baseline: dict | None = None, label: str = "actual return",
                          baseline_label: str = "untrained model") -> Path:
    """Mean +- std of the actual return per target, the y = x line, (when given) the range
    of returns in the training data shaded and a baseline's curve (e.g. the untrained model)."""
    plt = _plt()
    rows = [v for v in metrics["targets"].values() if v.get("count")]
    base = [v for v in (baseline or {}).get("targets", {}).values() if v.get("count")]
    xs = [r["target"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if data_range is not None:
        ax.axhspan(*data_range, color="tab:green", alpha=0.12,
                   label=f"training returns ({data_range[0]:g} to {data_range[1]:g})")
    lo, hi = min([0.0, *xs]), max([1.0, *xs, *(r["mean"] + r["std"] for r in rows + base)])
    ax.plot([lo, hi], [lo, hi], "--", color="grey", label="actual = target")
    if base:
        ax.errorbar([r["target"] for r in base], [r["mean"] for r in base],
                    yerr=[r["std"] for r in base], fmt="s:", capsize=3, color="tab:orange",
                    label=f"{baseline_label} (mean ± std)")
    ax.errorbar(xs, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], fmt="o-",
                capsize=4, color="tab:blue", label=f"{label} (mean ± std)")
    rho = metrics.get("spearman_means")
    ax.set_title(f"{fill(title, 60)}\nSpearman(target, mean actual) = "
                 f"{'n/a' if rho is None else f'{rho:.2f}'}")
    ax.set_xlabel("target return in the prompt")
    ax.set_ylabel("actual episode return")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_comparison(summaries: dict[str, dict], path: str | Path, title: str) -> Path:
    """Bar charts side by side: mean return (± std), mean episode length, action shares."""
    plt = _plt()
    names = list(summaries)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    means = [summaries[n]["return"].get("mean", 0.0) for n in names]
    stds = [summaries[n]["return"].get("std", 0.0) for n in names]
    axes[0].bar(names, means, yerr=stds, capsize=5, color="tab:blue")
    axes[0].set_title("episode return (mean ± std)")
    axes[0].set_ylabel("return")
    axes[1].bar(names, [summaries[n]["length_mean"] for n in names], color="tab:orange")
    axes[1].set_title("episode length (mean)")
    axes[1].set_ylabel("steps")
    actions = sorted({a for n in names for a in summaries[n]["actions"]})
    width = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        xs = [k + i * width for k in range(len(actions))]
        axes[2].bar(xs, [summaries[n]["actions"].get(a, 0.0) for a in actions], width, label=n)
    axes[2].set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(actions))])
    axes[2].set_xticklabels(actions, rotation=30, ha="right")
    axes[2].set_title("action distribution")
    axes[2].set_ylabel("share of steps")
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    return _save(plt, fig, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats with 2 decimals (3 significant digits below 0.01, so a
    learning rate of 5e-4 does not read 0.00)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if v == 0 or abs(v) >= 0.01 else f"{v:.3g}"
        return "n/a" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(rows: Sequence[dict], csv_path: str | Path, md_path: str | Path) -> None:
    """Rows (dicts, in order) as CSV and as a markdown table; columns in first-seen order."""
    import csv

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    Path(md_path).write_text(markdown_table(cols, [[r.get(c) for c in cols] for r in rows])
                             + "\n")


def plot_objective(rows: Sequence[dict], keys: Sequence[str], metric: str,
                   path: str | Path) -> Path:
    """The objective against each swept setting: one panel per key, one point per trial that
    has a value (log x axis where a setting spans more than a factor of 20)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r[key], r[metric]) for r in rows
               if isinstance(r.get(key), int | float) and isinstance(r.get(metric), int | float)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o", color="tab:blue")
            if min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} per trial")
    return _save(plt, fig, path)


def plot_curves(curves: Sequence[tuple[str, Sequence[Sequence[float]], str]], path: str | Path,
                xlabel: str, ylabel: str, title: str) -> Path:
    """Line plot of ``(label, [(x, y), ...], matplotlib format)`` curves; empty ones skipped."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points, fmt in curves:
        if points:
            ax.plot(*zip(*points, strict=True), fmt, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_return_vs_frames(curves: dict[str, Sequence], path: str | Path, title: str,
                          threshold: float | None = None) -> Path:
    """Mean +- std across seeds of return against environment frames, one line per method
    (``curves``: method -> list of per-seed ``[(frames, return), ...]``)."""
    from policylm.platform.evaluation.sample_efficiency import mean_std

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for method, seeds in curves.items():
        grid, mean, std = mean_std(seeds)
        ax.plot(grid, mean, label=f"{method} ({len(seeds)} seeds)")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="grey", label=f"threshold {threshold:g}")
    ax.set_xlabel("environment frames (PPO)")
    ax.set_ylabel("episode return (mean ± std over seeds)")
    ax.set_title(fill(title, 70))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_visitation(positions: Sequence[tuple[float, float]], path: str | Path, title: str,
                    grid: tuple[int, int] | None = None,
                    labels: tuple[str, str] = ("x", "y")) -> Path:
    """Heatmap of visited positions: cell counts on a ``grid`` (width, height) with y down, as
    MiniGrid draws it, or a 2-D histogram of continuous points (e.g. CartPole x and angle)."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    pts = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if grid is not None:
        counts = np.zeros((grid[1], grid[0]))
        np.add.at(counts, (pts[:, 1].astype(int), pts[:, 0].astype(int)), 1)
        im = ax.imshow(counts, cmap="viridis", origin="upper")
        ax.set_xticks(range(grid[0]))
        ax.set_yticks(range(grid[1]))
    else:
        counts, xe, ye = np.histogram2d(pts[:, 0], pts[:, 1], bins=30) if len(pts) else (
            np.zeros((1, 1)), np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        im = ax.imshow(counts.T, cmap="viridis", origin="lower", aspect="auto",
                       extent=(xe[0], xe[-1], ye[0], ye[-1]))
    fig.colorbar(im, ax=ax, label="steps")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(fill(title, 50), fontsize=9)
    return _save(plt, fig, path)


def success_rate_table(rates: dict[str, dict[str, float]],
                       extra_rows: Sequence[Sequence[object]] = ()) -> str:
    """Markdown table of each achievement's success rate (share of episodes, in percent), one
    column per source in ``rates`` (``{source: {achievement: rate}}``; missing rates are 0),
    then ``extra_rows``."""
    names = sorted({a for r in rates.values() for a in r})
    rows = [[a, *(f"{r.get(a, 0.0):.0%}" for r in rates.values())] for a in names]
    return markdown_table(["achievement", *rates], [*rows, *extra_rows])


def plot_achievements(rates: dict[str, dict[str, float]], path: str | Path, title: str) -> Path:
    """Grouped horizontal bars: each achievement's success rate (share of episodes) per run."""
    import numpy as np

    plt = _plt()
    names = sorted({a for r in rates.values() for a in r})
    runs = list(rates)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * max(len(names), 4) * max(len(runs), 1) ** 0.5
                                    + 1.2))
    height = 0.8 / max(len(runs), 1)
    ys = np.arange(len(names))
    for i, run in enumerate(runs):
        ax.barh(ys + i * height, [100 * rates[run].get(a, 0.0) for a in names], height,
                label=run)
    ax.set_yticks(ys + height * (len(runs) - 1) / 2)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("success rate (% of episodes)")
    ax.set_xlim(0, 100)
    ax.set_title(fill(title, 70))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _save(plt, fig, path)


def plot_scores(metrics: dict, path: str | Path, title: str) -> Path:
    """A benchmark's scores: per task (± s.e.) on the left, the overall score next to the
    published references on the right."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    tasks = list(metrics["tasks"])

    def bars(ax: object, names: list[str], items: list[dict], colors: list[str]) -> None:
        values = [i.get("score") or 0.0 for i in items]
        errors = [i.get("se") or 0.0 for i in items]
        ax.bar(names, values, yerr=errors, capsize=4, color=colors)  # type: ignore[attr-defined]
        ax.set_ylim(0, 100)  # type: ignore[attr-defined]
        ax.set_ylabel("progression %")  # type: ignore[attr-defined]
        ax.tick_params(axis="x", labelrotation=30)  # type: ignore[attr-defined]

    bars(axes[0], tasks, [metrics["tasks"][t] for t in tasks], ["tab:blue"] * len(tasks))
    axes[0].set_title("this run, per task (± s.e.)")
    refs = metrics.get("references", [])
    bars(axes[1], [r["model"] for r in refs] + ["this run"],
         [*refs, metrics["overall"]], ["tab:gray"] * len(refs) + ["tab:blue"])
    axes[1].set_title("overall, next to published figures")
    fig.suptitle(title)
    return _save(plt, fig, path)


def sample_thoughts(steps: Any, per_skill: int = 3, width: int = 300) -> dict[str, list]:
    """A think-mode run's first ``per_skill`` thoughts per skill label (target), from its first
    episode: ``{skill: [{"t", "thought", "action"}]}`` with each thought cut to ``width``
    characters; empty when the steps hold no thought."""
    from policylm.platform.data import trajectories as tr

    if tr.THOUGHT not in steps.schema.names or steps.column(tr.THOUGHT).null_count == len(steps):
        return {}
    rows = steps.select([tr.SKILL, tr.EPISODE_ID, tr.T, tr.THOUGHT, tr.ACTION_TEXT]).to_pylist()
    rows.sort(key=lambda r: (r[tr.SKILL], r[tr.EPISODE_ID], r[tr.T]))
    out: dict[str, list] = {}
    first: dict[str, str] = {}
    for r in rows:
        skill = r[tr.SKILL]
        if first.setdefault(skill, r[tr.EPISODE_ID]) != r[tr.EPISODE_ID] or r[tr.THOUGHT] is None:
            continue
        picked = out.setdefault(skill, [])
        if len(picked) < per_skill:
            text = " ".join(r[tr.THOUGHT].split())
            picked.append({"t": r[tr.T], "thought": text[:width] + ("…" if len(text) > width
                                                                     else ""),
                           "action": r[tr.ACTION_TEXT]})
    return out


def thought_section(thoughts: dict[str, list]) -> str:
    """Markdown: each skill's sampled thoughts, then the action taken after them."""
    if not thoughts:
        return ""
    lines = ["", "## Thoughts (first steps of the first episode)", ""]
    for skill, picked in thoughts.items():
        lines += [f"**{skill}**", ""]
        lines += [f"- step {p['t']}: {p['thought'] or '(empty)'} -> `{p['action']}`"
                  for p in picked]
        lines.append("")
    return "\n".join(lines)
