"""Tune trials and search spaces for ``policylm sweep``.

- :func:`target_trial`: one target return, played in the trial's process (the policy URI with
  ``target_return`` set), reporting the actual return's statistics once.
- :func:`train_trial`: an SFT run in the trial's process (the same trainer, model and settings
  as ``policylm sft``) that reports the validation loss at every evaluation, so ASHA can stop a
  weak trial early, then saves its adapter and plays it at the trial's target.

Search spaces are written as ``{key: [v1, v2]}`` (a grid) or ``{key: {min: a, max: b, log:
true, int: false}}`` (sampled ``num_samples`` times); keys are dotted config keys of the trial
(``lora.rank``, ``lr``, ``target_return``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policylm.platform.config import ConfigError


def search_space(space: dict) -> dict:
    """Tune's ``param_space`` from the sweep config's ``space`` (see module docstring)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"space.{key}: give at least one value")
            out[key] = tune.grid_search(list(spec))
        elif isinstance(spec, dict) and {"min", "max"} <= set(spec):
            lo, hi = float(spec["min"]), float(spec["max"])
            if not lo < hi or (spec.get("log") and lo <= 0):
                raise ConfigError(f"space.{key}: need min < max (and min > 0 with log: true)")
            if spec.get("int"):
                out[key] = (tune.lograndint if spec.get("log") else tune.randint)(
                    int(lo), int(hi) + 1)
            else:
                out[key] = (tune.loguniform if spec.get("log") else tune.uniform)(lo, hi)
        else:
            raise ConfigError(f"space.{key}: write a list of values (grid) or "
                              "{min: a, max: b, log: false, int: false} (sampled)")
    return out


def _play(policy: str, target: float, env_id: str, env_options: dict, episodes: int,
          seed: int, out: Path) -> dict:
    """Play ``episodes`` at ``target`` in this process; the target's return statistics."""
    from policylm.actors.rollout import play_policies
    from policylm.platform.data import trajectories as tr
    from policylm.platform.evaluation.metrics import target_label, target_metrics
    from policylm.platform.policies import with_params

    uri = with_params(policy, target_return=target)
    stats = play_policies([(target_label(target), uri)], env_id, env_options, episodes, out,
                          num_workers=0, envs_per_worker=min(episodes, 8), torch_threads=1,
                          seed=seed)
    episodes_table = tr.episode_table(tr.read_trajectories(out / "trajectories"))
    m = target_metrics(episodes_table, [target])["targets"][target_label(target)]
    return {"target_return": float(target), "mean_return": m["mean"], "std_return": m["std"],
            "median_return": m["median"], "episodes": m["count"],
            "invalid_rate": stats.get(uri, {}).get("invalid_rate")}


def target_trial(config: dict, base: dict) -> None:
    """One target return (``config["target_return"]``) of a target sweep."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(base["threads"])))
    out = Path(tune.get_context().get_trial_dir())
    tune.report(_play(base["policy"], float(config["target_return"]), base["env_id"],
                      base["env_options"], base["episodes"], base["seed"], out))


def _report_callback() -> Any:
    """A transformers callback reporting each evaluation's loss to Tune."""
    from ray import tune
    from transformers import TrainerCallback

    class ReportEvalLoss(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_loss" in metrics:
                tune.report({"eval_loss": float(metrics["eval_loss"]),
                             "step": int(state.global_step)})

    return ReportEvalLoss()


def train_trial(config: dict, base: dict) -> None:
    """An SFT run with this trial's settings, then its adapter played at the trial's target."""
    import torch
    from datasets import Dataset
    from ray import tune

    from policylm.platform.config import config_from_dict
    from policylm.platform.policies.shots import render_shots
    from policylm.platform.records import adapter_record, write_record
    from policylm.platform.training.sft import (
        SftJobConfig,
        build_trainer,
        dataset_dir,
        read_rows,
        shots_of,
    )

    torch.set_num_threads(max(1, int(base["threads"])))
    out = Path(tune.get_context().get_trial_dir())
    sft = {**base["sft"], "lora": dict(base["sft"]["lora"])}
    for key, value in config.items():
        if key == "target_return":
            continue
        section, _, name = key.rpartition(".")
        (sft[section] if section else sft)[name] = value
    cfg = config_from_dict(SftJobConfig, sft)
    data = dataset_dir(cfg.dataset)
    lead = render_shots(shots_of(cfg))
    train = Dataset.from_list(read_rows(data, "train", cfg.prompt_form,
                                        target_dropout=cfg.target_dropout, lead=lead))
    valid_rows = read_rows(data, "validation", cfg.prompt_form, lead=lead)
    if not valid_rows:
        raise ConfigError(f"{cfg.dataset}: no validation rows; ASHA needs a validation loss: "
                          "build the dataset with validation_fraction > 0")
    trainer = build_trainer(cfg, train, Dataset.from_list(valid_rows), str(out / "hf"),
                            [_report_callback()], False, cfg.max_eval_rows)
    trainer.train()
    final_loss = float(trainer.evaluate()["eval_loss"])
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    trainer.processing_class.save_pretrained(str(adapter))
    write_record(adapter, adapter_record(cfg.prompt_form, data, lead))
    model = base["sft"]["model"]
    policy = f"hf://{model}?adapter={adapter}&temperature={base['temperature']}"
    result = _play(policy, float(config.get("target_return", base["target_return"])),
                   base["env_id"], base["env_options"], base["episodes"], base["seed"],
                   out / "evaluate")
    tune.report({"eval_loss": final_loss, "step": int(trainer.state.global_step),
                 "adapter": str(adapter), **result})
