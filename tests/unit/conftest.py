"""Fixtures of the unit tests that act in CartPole with the tiny model."""

import pytest

from policylm.platform.envs import make_adapter


@pytest.fixture(scope="module")
def cartpole():
    return make_adapter("CartPole-v1")


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from policylm.platform.engines import get_engine

    return get_engine(tiny_model_dir, "", "hf", "fp32")


@pytest.fixture(scope="module")
def play_returns():
    """``play(env_id, uri, seeds) -> [return, ...]``: a policy URI played here, one episode per
    seed, step by step (a second way to compute what the jobs report)."""
    from policylm.platform.policies import policy_from_uri

    def play(env_id: str, uri: str, seeds) -> list[float]:
        adapter = make_adapter(env_id)
        policy, env, returns = policy_from_uri(uri, adapter), adapter.make_env(), []
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            policy.reset(0, seed)
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(policy.act([obs], [0])[0])
                total, done = total + r, term or trunc
            returns.append(total)
        return returns

    return play
