"""Shared fixtures: a tiny random-weight Llama with the real SmolLM2 tokenizer."""

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from policylm.platform.engines.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))
