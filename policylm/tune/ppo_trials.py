"""PPO trials (RLlib, new API stack) from scratch or from saved module weights, run as Tune
trials: one trial per (method, seed), each PPO in its trial's own process with a local env
runner, so trials run side by side, one CPU each.

A trial's spec (a plain dict, what Tune passes): ``name``, ``env_id``, ``env_options``, ``seed``,
``frames`` (budget), ``ppo`` (settings, see :func:`ppo_config`), ``init`` (``scratch``, ``bc``,
``transfer`` or ``external``), ``init_path`` (an RLModule directory for the others),
``model_config`` (optional: the module's shape when it is not ``ppo["hidden"]``'s),
``eval_episodes``, ``out_dir``. It writes into ``out_dir``: ``result.json`` (curve,
evaluations, init check), ``positions.npy`` (visited positions in the final evaluation),
``module/`` (the trained RLModule, usable as ``rllib://``) and TensorBoard event files under
``tensorboard/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODULE_COMPONENT = "learner_group/learner/rl_module/default_policy"


def eval_seed(seed: int) -> int:
    """The first env seed of a trial's evaluation episodes (``eval_seed + e`` for episode
    ``e``): in the test range, 1,000 apart per trial seed."""
    from policylm.platform.seeds import TEST_SEED

    return TEST_SEED + 1000 * seed


def ppo_config(env_id: str, env_options: dict, ppo: dict, seed: int,
               model: dict | None = None) -> Any:
    """A PPOConfig over ``FlatObsEnv`` with a local env runner (sampling in this process).

    ``ppo`` keys: lr, train_batch_size, minibatch_size, num_epochs, entropy_coeff, gamma,
    lambda_, vf_loss_coeff, hidden (MLP sizes), envs (vectorised envs); ``model``: the RLModule's
    model config instead of :func:`model_config` of ``hidden``."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from policylm.platform.envs import FlatObsEnv

    return (
        PPOConfig()
        .environment(FlatObsEnv, env_config={"env_id": env_id, "env_options": env_options})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=int(ppo["envs"]))
        .training(lr=float(ppo["lr"]), train_batch_size_per_learner=int(ppo["train_batch_size"]),
                  minibatch_size=int(ppo["minibatch_size"]), num_epochs=int(ppo["num_epochs"]),
                  entropy_coeff=float(ppo["entropy_coeff"]), gamma=float(ppo["gamma"]),
                  lambda_=float(ppo["lambda_"]), vf_loss_coeff=float(ppo["vf_loss_coeff"]))
        .rl_module(model_config=model or model_config(ppo["hidden"]))
        .debugging(seed=int(seed))
    )


def model_config(hidden: Sequence[int]) -> dict:
    """The module shape BC and PPO share: separate policy and value encoders (so BC trains
    exactly the policy part PPO loads)."""
    return {"fcnet_hiddens": [int(h) for h in hidden], "vf_share_layers": False}


def module_dir(checkpoint: str | Path) -> Path:
    """The default RLModule's directory inside an algorithm checkpoint."""
    return Path(checkpoint) / MODULE_COMPONENT


def _learner_module(algo: Any) -> Any:
    # the learner is local (num_learners=0): its module object itself comes back
    results = algo.learner_group.foreach_learner(lambda learner: learner.module)
    return next(iter(results)).get()


def value_head(module: Any) -> Any:
    """The last linear layer of a PPO module's value head (the layer that outputs V)."""
    from torch import nn

    layers = [m for m in module["default_policy"].vf.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("the PPO module has no linear value-head layer")
    return layers[-1]


def load_policy(algo: Any, path: str | Path, zero_value: bool) -> Any:
    """Load the RLModule saved at ``path`` (a BC or PPO module directory) into the PPO learner
    and its env runner; with ``zero_value`` the value head's output layer is zeroed (V = 0
    everywhere, as in RLlib's BC-then-PPO pattern, so the critic starts neutral). Returns the
    saved module, for checks."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(path)
    if not (path / "module_state.pkl").exists() and not (path / "module_state.pt").exists():
        raise FileNotFoundError(f"{path} holds no RLModule state (module_state.pkl); pass the "
                                f"{MODULE_COMPONENT} directory of a BC or PPO checkpoint")
    saved = RLModule.from_checkpoint(str(path))
    target = _learner_module(algo)["default_policy"]
    missing = set(target.get_state()) - set(saved.get_state())
    if missing - {k for k in missing if k.startswith(("vf.", "encoder.critic_encoder."))}:
        raise ValueError(f"the module at {path} does not fit this PPO module (missing "
                         f"{sorted(missing)[:4]}); train it with the same hidden sizes")
    # the saved policy weights; a value part it lacks keeps its fresh initialisation
    target.set_state({**target.get_state(), **saved.get_state()})
    if zero_value:
        layer = value_head(_learner_module(algo))
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.zero_()
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group,
                                       inference_only=True)
    return saved


def policy_weights(module: Any) -> dict[str, np.ndarray]:
    """The policy part (encoder feeding pi, and pi) of a PPO/BC module as numpy arrays, keyed
    as in an inference-only module (whose actor encoder is named ``encoder.encoder``)."""
    state = module.get_state() if hasattr(module, "get_state") else module
    return {k.replace("encoder.actor_encoder.", "encoder.encoder."): np.asarray(v)
            for k, v in state.items()
            if k.startswith(("pi.", "encoder.actor_encoder.", "encoder.encoder."))}


def max_weight_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between two weight dicts with the same keys."""
    if set(a) != set(b) or not a:
        raise ValueError(f"weight sets differ: {sorted(set(a) ^ set(b))}")
    return float(max(np.abs(a[k] - b[k]).max() for k in a))


def _tensorboard(out_dir: Path) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(out_dir / "tensorboard"))


def run_ppo(spec: dict, report: Callable[[dict], None] = lambda _: None) -> dict:
    """Train one PPO policy as ``spec`` says (see module docstring); returns the result."""
    from policylm.platform.envs import make_adapter
    from policylm.platform.evaluation.sample_efficiency import evaluate_logits
    from policylm.rllib.checkpoints import module_logits_fn

    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = make_adapter(spec["env_id"], **spec["env_options"])
    algo = ppo_config(spec["env_id"], spec["env_options"], spec["ppo"], spec["seed"],
                      spec.get("model_config")).build_algo()
    check: dict[str, Any] = {}
    if spec["init"] != "scratch":
        neutral = spec["init"] in ("bc", "external")  # a policy without a trained critic
        saved = load_policy(algo, spec["init_path"], zero_value=neutral)
        check["policy_max_abs_diff"] = max_weight_diff(
            policy_weights(saved), policy_weights(algo.get_module()))
        if neutral:
            check["value_head_abs_sum"] = float(
                value_head(_learner_module(algo)).weight.detach().abs().sum())

    def evaluate() -> Any:  # the same env seeds at every point of the curve, in the test range
        return evaluate_logits(adapter, module_logits_fn(algo.get_module()),
                               int(spec["eval_episodes"]), eval_seed(int(spec["seed"])))

    # one estimator for the whole curve and every method: the policy's mean return (actions
    # sampled from its softmax) over the same eval episodes, before training (frame 0) and
    # every eval_interval frames
    interval = int(spec.get("eval_interval") or max(1, int(spec["frames"]) // 8))
    writer = _tensorboard(out_dir)
    before = after = evaluate()
    curve = [(0.0, before.mean)]
    writer.add_scalar("eval_return", before.mean, 0)
    report({"frames": 0, "return": before.mean})
    frames, next_eval = 0, interval
    try:
        while frames < int(spec["frames"]):
            result = algo.train()
            frames = int(result["num_env_steps_sampled_lifetime"])
            ret = result.get("env_runners", {}).get("episode_return_mean")
            learner = result.get("learners", {}).get("default_policy", {})
            if ret is not None and not np.isnan(ret):  # RLlib's sampling return: a log only
                writer.add_scalar("train_return", float(ret), frames)
            for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss"):
                if key in learner:
                    writer.add_scalar(f"learner/{key}", float(learner[key]), frames)
            if frames >= next_eval or frames >= int(spec["frames"]):
                after = evaluate()
                curve.append((float(frames), after.mean))
                writer.add_scalar("eval_return", after.mean, frames)
                next_eval = frames + interval
            report({"frames": frames, "return": curve[-1][1]})
        # the learner's full module (policy and value), so transfer carries the critic too
        _learner_module(algo)["default_policy"].save_to_path(str((out_dir / "module").resolve()))
    finally:
        writer.close()
        algo.stop()
    np.save(out_dir / "positions.npy", np.asarray(after.positions, dtype=np.float32))
    result = {
        "name": spec["name"], "method": spec.get("method", spec["init"]), "seed": spec["seed"],
        "frames": frames, "curve": curve, "init_path": spec["init_path"], "init_check": check,
        "eval_before": {"mean": before.mean, "success_rate": before.success_rate},
        "eval_after": {"mean": after.mean, "success_rate": after.success_rate},
        "module": str((out_dir / "module").resolve()), "out_dir": str(out_dir.resolve()),
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _trial(config: dict) -> None:
    from ray import tune

    run_ppo(config["spec"], report=lambda m: tune.report(
        {k: (float("nan") if v is None else v) for k, v in m.items()}))


def run_trials(specs: Sequence[dict], storage: Path, name: str,
               max_concurrent: int = 2, callbacks: Sequence[Any] = ()) -> list[dict]:
    """Run one Tune trial per spec (one CPU each, ``max_concurrent`` at once, Tune
    ``callbacks`` such as trackers) and return their results in the order of ``specs``. A failed
    trial raises with its error."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_trial, {"cpu": 1}),
        param_space={"spec": tune.grid_search(list(specs))},
        # a trial process runs the next trial (its imports kept)
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(Path(storage).resolve()), name=name,
                                  verbose=0, callbacks=list(callbacks)),
    )
    grid = tuner.fit()
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} PPO trial(s) failed; first error: {errors[0]}")
    return [json.loads((Path(s["out_dir"]) / "result.json").read_text()) for s in specs]
