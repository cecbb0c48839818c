"""Local Ray (2 CPUs) for the whole integration session, and tiny PPO experts trained once."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from policylm.runtime import runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env())
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def experts(ray_local, tmp_path_factory):
    """RLlib PPO on CartPole at a tiny budget: checkpoints after iterations 1 and 3."""
    from policylm.jobs.train_experts import TrainExpertsConfig, main

    out = tmp_path_factory.mktemp("experts")
    # num_env_runners=0: the learner's process samples (no env-runner actor to start)
    cfg = TrainExpertsConfig(select="iteration", skills={"weak": 1, "expert": 3},
                             train_batch_size=600, minibatch_size=200, num_epochs=4,
                             eval_episodes=2, num_env_runners=0, out=str(out))
    return main(cfg)


@pytest.fixture(scope="session")
def small_dataset(ray_local, tmp_path_factory):
    """~200 chat rows of short CartPole episodes: a constant-right policy and a random one,
    30% of the episodes held out for validation."""
    from policylm.jobs.build_dataset import BuildDatasetConfig
    from policylm.jobs.build_dataset import main as build
    from policylm.jobs.collect import CollectConfig, PolicySource
    from policylm.jobs.collect import main as collect

    root = tmp_path_factory.mktemp("sftdata")
    collect(CollectConfig(
        policies=[PolicySource("right", "constant:right"), PolicySource("random", "random:")],
        env_options={"max_episode_steps": 20}, episodes_per_policy=8, num_workers=0,
        envs_per_worker=8, out=str(root / "collect")))
    build(BuildDatasetConfig(trajectories=str(root / "collect"), validation_fraction=0.3,
                             out=str(root / "ds")))
    return root / "ds"
