"""Local Ray (2 CPUs) for the whole integration session, and tiny PPO experts trained once."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from policylm.jobs.common import RUNTIME_ENV

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=RUNTIME_ENV)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def experts(ray_local, tmp_path_factory):
    """RLlib PPO on CartPole at a tiny budget: checkpoints after iterations 1 and 3."""
    from policylm.jobs.train_experts import TrainExpertsConfig, main

    out = tmp_path_factory.mktemp("experts")
    cfg = TrainExpertsConfig(select="iteration", skills={"weak": 1, "expert": 3},
                             train_batch_size=600, minibatch_size=200, num_epochs=4,
                             eval_episodes=2, out=str(out))
    return main(cfg)
