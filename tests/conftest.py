"""Shared fixtures: a tiny random-weight Llama with the real SmolLM2 tokenizer."""

import os

import pytest

# nothing in the tests may reach a model hub; Ray workers get this too (policylm.runtime)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from policylm.platform.engines.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))
