"""Shared fixtures: a tiny random-weight Llama with the real SmolLM2 tokenizer."""

import os

import pytest

# nothing in the tests may reach a model hub; Ray workers get this too (policylm.runtime)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the tests start their own local Ray: a RAY_ADDRESS from the shell would attach them to a
# cluster they do not own (and its CPUs, not the 2 the tests ask for)
os.environ.pop("RAY_ADDRESS", None)
# Ray Train runs here last seconds: its controller polls the workers every 0.5 s (2 s by
# default, which a short run waits out at its end), and starts no preemption watcher nor
# metrics. The session's Ray, the clusters and the CLI processes the tests start inherit these.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from policylm.platform.engines.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


@pytest.fixture
def mlflow_history():
    """``history(run_dir, key)``: the ``(step, value)`` pairs of metric ``key`` in the MLflow run
    a job recorded in ``run_dir/tracking.json``, read back with MLflow's client."""
    import json
    from pathlib import Path

    def history(run_dir, key: str) -> list[tuple[int, float]]:
        from mlflow import MlflowClient

        info = json.loads((Path(run_dir) / "tracking.json").read_text())["mlflow"]
        client = MlflowClient(info["uri"])
        return [(m.step, m.value) for m in sorted(
            client.get_metric_history(info["run_id"], key), key=lambda m: (m.step, m.timestamp))]

    return history


@pytest.fixture
def wandb_records():
    """``records(directory, wait_for=())``: the bytes of the offline W&B runs under
    ``directory`` (the SDK has no reader for them; keys and JSON values are stored as plain
    strings in the records). W&B's service process may still be writing them after
    ``finish()`` returns on a loaded machine: ``wait_for`` (byte strings) reads again, for up
    to 60 s, until all of them are there."""
    import time
    from pathlib import Path

    def records(directory, wait_for=()) -> bytes:
        deadline = time.monotonic() + 60
        while True:
            files = sorted(f for f in Path(directory).rglob("run-*.wandb")
                           if "latest-run" not in f.parts)
            data = b"".join(f.read_bytes() for f in files)
            if (files and all(w in data for w in wait_for)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert files, f"no offline W&B run under {directory}"
        return data

    return records


@pytest.fixture
def filled_adapter(tiny_model_dir, tmp_path):
    """``make(record) -> path``: a LoRA adapter (rank 4, every linear layer) on the tiny model
    whose lora_B weights are all 0.05 (a new adapter's are 0, so training that continues it is
    told apart from a new one), with ``record`` as its ``policylm.json``."""
    from peft import LoraConfig, get_peft_model

    from policylm.platform.records import write_record
    from policylm.platform.training.sft import SftJobConfig, load_model

    def make(record):
        model, _, _ = load_model(SftJobConfig(model=tiny_model_dir, dtype="fp32"))
        peft_model = get_peft_model(model, LoraConfig(
            r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.data.fill_(0.05)
        path = tmp_path / "adapter"
        peft_model.save_pretrained(path)
        write_record(path, record)
        return path

    return make
