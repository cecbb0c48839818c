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
