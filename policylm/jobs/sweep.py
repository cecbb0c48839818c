"""Sweeps with Ray Tune: target returns of a trained policy, or SFT settings (LoRA rank, alpha,
learning rate, the evaluation target) with ASHA stopping weak trials on validation loss.

Usage: ``policylm sweep --config configs/sweep_targets.yaml`` (or ``configs/sweep_train.yaml``;
``python -m policylm.jobs.sweep ...``). Writes ``results.csv`` and ``results.md`` (sorted by the
objective), ``objective.png`` (the objective against each swept setting), ``best_config.yaml``
(ready to run: ``policylm evaluate`` for a target sweep, ``policylm sft`` for a training
sweep), ``target_vs_actual.png`` and ``report.md``. An interrupted sweep continues with
``resume=true`` (``Tuner.restore``): finished trials are kept, not rerun.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from policylm.jobkit.runs import Stages, log, open_run, run_job, write_json
from policylm.platform.config import ConfigError, field, overwrite_field, require
from policylm.platform.memory import with_memory
from policylm.platform.policies import absolute_paths
from policylm.platform.policies.uri import uri_paths
from policylm.platform.seeds import VALIDATION_SEED
from policylm.platform.tracking import TrackingConfig
from policylm.platform.training.sft import SftJobConfig
from policylm.runtime import check_shared_dir, check_visible, init_ray

KINDS = ("target", "train")


@dataclass
class SweepConfig:
    """Sweep target returns, or SFT settings followed by evaluation, with Ray Tune."""

    kind: str = field("target", doc="target: evaluate a trained policy at each target return; "
                                    "train: an SFT run + evaluation per trial")
    space: dict = field(factory=lambda: {"target_return": [25, 100, 250, 500]},
                        doc="dotted key -> [values] (grid) or {min, max, log, int} (sampled "
                            "num_samples times); train keys: lora.rank, lora.alpha, lr, "
                            "target_return, any sft key")
    num_samples: int = field(1, doc="samples of the space (grid: repeats of the grid)")
    policy: str = field("hf://smollm2-135m?temperature=1",
                        doc="kind=target: the policy URI (target_return is set per trial)")
    sft: SftJobConfig = field(factory=SftJobConfig, doc="kind=train: base SFT settings (sft.<key>)")
    target_return: float = field(500.0, doc="kind=train: evaluation target when the space has "
                                            "no target_return")
    temperature: float = field(0.5, doc="kind=train: evaluation sampling temperature")
    env_id: str = field("CartPole-v1", doc="Gymnasium env id")
    env_options: dict = field(factory=dict, doc="options for the env adapter")
    episodes: int = field(8, doc="evaluation episodes per trial (the same seeds in every trial)")
    seed: int = field(VALIDATION_SEED, doc="base seed of the evaluation env seeds (default: the "
                      "validation range, policylm.platform.seeds: a sweep chooses settings; "
                      "report the chosen ones on the test range with evaluate)")
    metric: str = field("mean_return", doc="objective to sort by: mean_return, eval_loss, ...")
    mode: str = field("max", doc="max or min (of metric)")
    asha: bool = field(True, doc="kind=train: ASHA stops weak trials early on eval_loss")
    grace_period: int = field(1, doc="ASHA: evaluations before a trial can be stopped")
    reduction_factor: int = field(2, doc="ASHA: keep 1/reduction_factor of trials per rung")
    cpus_per_trial: float = field(1.0, doc="CPUs per trial (its torch threads)")
    gpus_per_trial: float = field(0.0, doc="GPUs per trial")
    max_concurrent_trials: int = field(0, doc="0: as many as the cluster's resources allow")
    resume: bool = field(False, doc="continue the sweep already in out= (Tuner.restore)")
    tracking: TrackingConfig = field(factory=TrackingConfig, doc="TensorBoard and MLflow "
                                     "(tracking.<key>)")
    out: str = field("", doc="run directory (default runs/sweep-<timestamp>)")
    overwrite: bool = overwrite_field()

    def validate(self) -> None:
        require(self.kind in KINDS, "kind", f"use one of {', '.join(KINDS)}")
        require(bool(self.space), "space", "give at least one key to sweep")
        require(self.num_samples >= 1, "num_samples", "must be >= 1")
        require(self.episodes >= 1, "episodes", "must be >= 1")
        require(self.mode in ("max", "min"), "mode", "use max or min")
        require(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")
        if self.kind == "target":
            require(set(self.space) == {"target_return"}, "space",
                    "a target sweep sweeps target_return only")
        else:
            require(bool(self.sft.dataset), "sft.dataset", "give the build-dataset run directory")


def trainable(cfg: SweepConfig) -> Any:
    """The Tune trainable for ``cfg``: the trial function with its fixed settings and
    resources."""
    from ray import tune

    from policylm.platform.policies import absolute_paths
    from policylm.tune.trials import target_trial, train_trial

    base: dict[str, Any] = {"env_id": cfg.env_id, "env_options": cfg.env_options,
                            "episodes": cfg.episodes, "seed": cfg.seed,
                            "threads": cfg.cpus_per_trial}
    if cfg.kind == "target":
        fn = tune.with_parameters(target_trial,
                                  base={**base, "policy": absolute_paths(cfg.policy)})
    else:
        sft = asdict(cfg.sft)
        sft["dataset"] = str(Path(cfg.sft.dataset).resolve())
        if sft.get("shots_from"):  # trials run in their own directories
            sft["shots_from"] = str(Path(sft["shots_from"]).resolve())
        if Path(sft["model"]).exists():
            sft["model"] = str(Path(sft["model"]).resolve())
        fn = tune.with_parameters(train_trial, base={
            **base, "sft": sft, "target_return": cfg.target_return,
            "temperature": cfg.temperature})
    return tune.with_resources(fn, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})


def tuner(cfg: SweepConfig, run_dir: Path) -> Any:
    """A new Tuner, or the interrupted one in ``run_dir`` restored (``resume``)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from policylm.tune.tracking import tune_callbacks
    from policylm.tune.trials import search_space

    path = run_dir / "tune" / "sweep"
    if cfg.resume:
        if not tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"resume=true but {path} holds no sweep to continue; drop "
                              "resume or point out= at the interrupted sweep's directory")
        log.info("resuming the sweep in %s (finished trials are kept)", path)
        return tune.Tuner.restore(str(path), trainable(cfg), resume_errored=True)
    scheduler = None
    if cfg.kind == "train" and cfg.asha:
        scheduler = ASHAScheduler(metric="eval_loss", mode="min", grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor,
                                  max_t=10_000)
    return tune.Tuner(
        trainable(cfg), param_space=search_space(cfg.space),
        # a trial process runs the next trial: its imports and loaded models are kept
        tune_config=tune.TuneConfig(num_samples=cfg.num_samples, scheduler=scheduler,
                                    max_concurrent_trials=cfg.max_concurrent_trials or None,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="sweep", storage_path=str(run_dir / "tune"),
                                  verbose=1,
                                  callbacks=tune_callbacks(cfg.tracking, run_dir, "sweep")),
    )


def results_rows(grid: Any, keys: list[str]) -> list[dict]:
    """One row per trial: its swept settings, its last reported metrics, and its status."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        row = {k: (result.config or {}).get(k) for k in keys}
        for name in ("mean_return", "std_return", "eval_loss", "step", "episodes",
                     "invalid_rate", "adapter"):
            if name in metrics:
                row[name] = metrics[name]
        row["trial"] = Path(result.path).name if result.path else ""
        row["status"] = "error" if result.error else (
            "finished" if "mean_return" in metrics else "stopped early")
        rows.append(row)
    return rows


def main(cfg: SweepConfig) -> dict:
    from policylm.platform.evaluation.reports import plot_objective, write_results
    from policylm.platform.evaluation.sweeps import best_row, sort_rows

    run_dir = open_run("sweep", cfg).resolve()  # refuses a reused out= before writing
    stages = Stages()
    if cfg.kind == "train":
        from policylm.platform.engines.models import resolve_model

        resolve_model(cfg.sft.model)  # convert/cache the embedded model once
    init_ray()
    # trials run on any node: Tune's storage, and what they read, must be shared there
    check_shared_dir(str(run_dir), "out")
    if cfg.kind == "train":
        check_visible([("sft.dataset", cfg.sft.dataset)])
    else:
        check_visible([("policy", p) for p in uri_paths(absolute_paths(cfg.policy))])
    t = tuner(cfg, run_dir)
    with stages("sweep"):
        grid = t.fit()
    keys = list(cfg.space)
    rows = sort_rows(results_rows(grid, keys), cfg.metric, cfg.mode)
    write_results(rows, run_dir / "results.csv", run_dir / "results.md")
    plot_objective(rows, keys, cfg.metric, run_dir / "objective.png")
    best = best_row(rows, cfg.metric, cfg.mode)
    best_path = write_best_config(cfg, best, run_dir) if best else None
    curve = [r for r in rows if r.get("mean_return") is not None
             and r.get("target_return") is not None]
    metrics: dict[str, Any] = {"trials": len(rows), "finished": sum(
        r["status"] == "finished" for r in rows), "stopped_early": sum(
        r["status"] == "stopped early" for r in rows), "errors": sum(
        r["status"] == "error" for r in rows), "best": best, "metric": cfg.metric,
        "mode": cfg.mode, "best_config": str(best_path) if best_path else None,
        "stage_seconds": stages.seconds}
    if cfg.kind == "target" and curve:
        metrics.update(target_curve(curve, run_dir, cfg))
    write_json(run_dir / "metrics.json", with_memory(metrics))
    (run_dir / "report.md").write_text(report(cfg, rows, metrics))
    return {"run_dir": str(run_dir), **metrics}


def target_curve(rows: list[dict], run_dir: Path, cfg: SweepConfig) -> dict:
    """The target-vs-actual curve of a target sweep (plot and Spearman)."""
    from policylm.platform.evaluation.metrics import spearman, target_label
    from policylm.platform.evaluation.reports import plot_target_vs_actual

    rows = sorted(rows, key=lambda r: r["target_return"])
    per = {target_label(r["target_return"]): {
        "target": r["target_return"], "mean": r["mean_return"], "std": r.get("std_return", 0.0),
        "count": r.get("episodes", 0)} for r in rows}
    rho = spearman([r["target_return"] for r in rows], [r["mean_return"] for r in rows])
    plot_target_vs_actual({"targets": per}, run_dir / "target_vs_actual.png",
                          f"{cfg.policy.split('?')[0]} on {cfg.env_id} (Tune sweep)")
    return {"spearman_means": rho, "curve": [[r["target_return"], r["mean_return"]]
                                             for r in rows]}


def write_best_config(cfg: SweepConfig, best: dict, run_dir: Path) -> Path:
    """The best trial as a ready-to-run config: ``policylm evaluate`` at the best target, or
    ``policylm sft`` with the best settings (plus the target to evaluate it at)."""
    import yaml

    from policylm.platform.policies import absolute_paths, with_params

    path = run_dir / "best_config.yaml"
    if cfg.kind == "target":
        policy = with_params(absolute_paths(cfg.policy), target_return=best["target_return"])
        data = {"policy": policy,
                "env_id": cfg.env_id, "env_options": cfg.env_options,
                "targets": [best["target_return"]], "episodes": cfg.episodes}
        head = f"# policylm evaluate --config {path}\n"
    else:
        data = asdict(cfg.sft)
        data["out"] = ""
        for key in cfg.space:
            if key != "target_return":
                section, _, name = key.rpartition(".")
                (data[section] if section else data)[name] = best[key]
        target = best.get("target_return", cfg.target_return)
        head = (f"# policylm sft --config {path}\n# then evaluate the adapter at target_return="
                f"{target}: best mean return {best.get('mean_return')}\n")
    path.write_text(head + yaml.safe_dump(data, sort_keys=False))
    return path


def report(cfg: SweepConfig, rows: list[dict], metrics: dict) -> str:
    from policylm.platform.evaluation.reports import markdown_table

    keys = list(cfg.space)
    cols = [*keys, "mean_return", "std_return", "eval_loss", "status"]
    table = markdown_table(cols, [[r.get(c) for c in cols] for r in rows])
    lines = [f"# Sweep ({cfg.kind}) on `{cfg.env_id}`", "",
             f"{metrics['trials']} trials: {metrics['finished']} finished, "
             f"{metrics['stopped_early']} stopped early by ASHA, {metrics['errors']} failed. "
             f"Sorted by {cfg.metric} ({cfg.mode}).", "", table, "",
             "![objective](objective.png)", ""]
    if "spearman_means" in metrics:
        rho = metrics["spearman_means"]
        lines += [f"Spearman(target, mean actual) = {'n/a' if rho is None else f'{rho:.3f}'}.",
                  "", "![target vs actual](target_vs_actual.png)", ""]
    if metrics.get("best_config"):
        lines += [f"Best config: `{metrics['best_config']}`.", ""]
    return "\n".join(lines)


CONFIG = SweepConfig
run = main  # the Python API: run(CONFIG(...)) -> dict, as the command does

if __name__ == "__main__":
    run_job("sweep", SweepConfig, main, sys.argv[1:])
