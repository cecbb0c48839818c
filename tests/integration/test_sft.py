"""SFT on Ray Train with TRL + PEFT on a tiny model: learning, resume after a killed worker,
merging."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from policylm.jobs.sft import SftJobConfig, main
from policylm.platform.records import read_record

pytestmark = pytest.mark.integration


def sft_cfg(data, model, out, **kw):
    base = dict(dataset=str(data), model=model, max_steps=6, batch_size=8, lr=3e-3,
                lora={"rank": 8, "alpha": 16}, eval_steps=3, save_steps=3, logging_steps=1,
                max_eval_rows=32, train={"num_workers": 2, "cpus_per_worker": 0.5},
                dtype="fp32", out=str(out))
    base.update(kw)
    from policylm.platform.config import load_config

    overrides = [f"{k}={json.dumps(v)}" for k, v in base.items()]
    return load_config(SftJobConfig, None, overrides)


def lora_b_norm(adapter_dir):
    from safetensors.torch import load_file

    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


def split_rows(data, split):
    import pyarrow.parquet as pq

    files = (Path(data) / "dataset" / split).glob("*.parquet")
    return sum(pq.read_metadata(f).num_rows for f in files)


def test_sft_on_two_workers_learns_on_every_row_once(small_dataset, tiny_model_dir, tmp_path,
                                                     mlflow_history):
    """Two workers, one epoch: across them every training row once (not half of each half), the
    same number of steps each, and every validation row evaluated once per evaluation."""
    n_train, n_valid = split_rows(small_dataset, "train"), split_rows(small_dataset, "validation")
    result = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run", max_steps=-1,
                          epochs=1, max_eval_rows=1000, eval_steps=4,
                          train={"num_workers": 2, "cpus_per_worker": 0.5, "record_rows": True}))
    steps = -(-n_train // (2 * 8))  # ceil(rows / (workers x batch))
    assert [w["train_rows"] for w in result["workers"]] == [n_train, n_train]
    assert [w["validation_rows"] for w in result["workers"]] == [n_valid, n_valid]
    records = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").read_text()
               .splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert sorted(i for r in train for i in r["rows"]) == list(range(n_train))
    assert [sum(r["rank"] == k for r in train) for k in (0, 1)] == [steps, steps]
    evaluations = {r["epoch"] for r in records if r["split"] == "validation"}
    assert len(evaluations) >= 2  # at step 4, at the end of training, and the final one
    for e in evaluations:
        rows = [i for r in records if r["split"] == "validation" and r["epoch"] == e
                for i in r["rows"]]
        assert sorted(rows) == list(range(n_valid))
    losses = [loss for _, loss in result["train_loss"]]
    assert len(losses) == steps and losses[-1] < losses[0]  # the loss fell
    evals = [loss for _, loss in result["eval_loss"]]
    assert evals and evals[-1] < evals[0] + 1e-6
    # rank 0's logs reached the job's MLflow run as they came: the same curve
    assert mlflow_history(tmp_path / "run", "loss") == [tuple(x) for x in result["train_loss"]]
    assert mlflow_history(tmp_path / "run", "final.train_tokens")[0][1] == result["train_tokens"]
    adapter = Path(result["adapter"])
    assert (adapter / "adapter_config.json").is_file()
    assert lora_b_norm(adapter) > 0  # LoRA B starts at zero: the adapter weights changed
    assert (tmp_path / "run" / "loss.png").is_file()
    # usable as a policy URI, and it scores differently from the base model
    from policylm.platform.engines import get_engine

    base = get_engine(tiny_model_dir, "", "hf", "fp32")
    tuned = get_engine(tiny_model_dir, str(adapter), "hf", "fp32")
    prompt = [base.template.prompt("CartPole.", "Target return: 20\nStep: 0\nx=0 v=0 a=0 w=0")]
    assert not np.allclose(base.score(prompt, [["left", "right"]]),
                           tuned.score(prompt, [["left", "right"]]), atol=1e-5)

    from policylm.jobs.merge import merge

    merged_dir = merge(tiny_model_dir, str(adapter), tmp_path / "merged")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([base.encode(prompt[0])])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                         str(adapter))(ids).logits
    assert torch.allclose(merged, peft, atol=1e-4)
    assert read_record(str(adapter)) == read_record(str(merged_dir))
    assert read_record(str(merged_dir)).prompt_form == "chat"


def test_sft_in_the_jobs_own_process(small_dataset, tiny_model_dir, tmp_path):
    """train.num_workers=0: Ray Train's local mode trains in this process (no worker actor),
    and the job's outputs are those of a run on workers: the adapter, the loss curve, the
    notes, the record."""
    result = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run", max_steps=6,
                          save_steps=4, train={"num_workers": 0}, prompt_form="compact"))
    (worker,) = result["workers"]
    notes = [json.loads(line) for line in (tmp_path / "run" / "train_notes.jsonl").read_text()
             .splitlines()]
    assert {n["pid"] for n in notes if "pid" in n} == {os.getpid()}  # this very process
    assert worker["rank"] == 0 and worker["train_rows"] == split_rows(small_dataset, "train")
    losses = [loss for _, loss in result["train_loss"]]
    assert [s for s, _ in result["train_loss"]] == list(range(1, 7)) and losses[-1] < losses[0]
    adapter = Path(result["adapter"])
    final = tmp_path / "run" / "hf" / "checkpoint-6"  # the last save, after step 6 (not 4)
    assert (adapter / "adapter_model.safetensors").read_bytes() == \
        (final / "adapter_model.safetensors").read_bytes()
    assert lora_b_norm(adapter) > 0
    assert read_record(str(adapter)).prompt_form == "compact"
    assert result["attempts"] == 1 and not result["resumed"]


def test_two_workers_continue_an_adapter_given_by_a_relative_path(small_dataset, tiny_model_dir,
                                                                   filled_adapter, tmp_path,
                                                                   monkeypatch):
    """init_adapter on two Ray Train workers: both start from the adapter (lora_B 0.05 where a
    new adapter's is 0) found by a path relative to the job's directory, and train it on."""
    from policylm.platform.records import PromptRecord

    filled_adapter(PromptRecord("chat"))  # tmp_path / "adapter"
    monkeypatch.chdir(tmp_path)
    result = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run", max_steps=2,
                          lr=1e-4, eval_steps=0, save_steps=2, init_adapter="adapter"))
    assert [w["rank"] for w in result["workers"]] == [0, 1]
    from safetensors.numpy import load_file

    lora_b = [v for k, v in load_file(str(Path(result["adapter"]) / "adapter_model.safetensors"))
              .items() if "lora_B" in k]
    assert lora_b and all(abs(float(v.mean()) - 0.05) < 0.01 for v in lora_b)
    assert any(not np.allclose(v, 0.05) for v in lora_b)  # trained on


def test_sft_resumes_after_a_killed_worker_and_its_storage_is_its_own(small_dataset,
                                                                      tiny_model_dir, tmp_path):
    storage = tmp_path / "S"
    result = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run", kill_at_step=4,
                          train={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 2,
                                 "storage_path": str(storage)},
                          prompt_form="compact", target_dropout=0.25, shots=2,
                          shots_from=str(small_dataset.parent / "collect")))
    notes = (tmp_path / "run" / "train_notes.jsonl").read_text()
    assert '"fault": "killed at step 4"' in notes
    assert result["attempts"] == 2 and result["resumed"]  # restarted from the step-3 checkpoint
    assert [s for s, _ in result["train_loss"]][-1] == 6  # and finished the run
    # trained in the compact prompt form, which the adapter records for the policy
    assert read_record(result["adapter"]).prompt_form == "compact"
    # with null-target rows (target_dropout): the adapter acts with return guidance
    from policylm.platform.envs import make_adapter
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks

    uri = f"hf://{tiny_model_dir}?adapter={result['adapter']}&dtype=fp32&guidance=1.5"
    # trained with two examples in every row: the adapter's policy prompts with them
    from policylm.platform.policies import policy_from_uri
    from policylm.platform.policies.shots import Shot, render_shots

    lead = render_shots([Shot(**s) for s in result["shots"]])
    assert len(result["shots"]) == 2 and len(lead.splitlines()) == 3  # a header, 2 examples
    assert policy_from_uri(uri, make_adapter("CartPole-v1")).lead == lead
    (chunk,) = plan_chunks([("g", uri)], 2, 0, 2)
    steps = EpisodeRunner(make_adapter("CartPole-v1"), 2).run(chunk.specs, "r")
    assert steps.num_rows >= 16  # two CartPole episodes played, each at least 8 steps
    # the same out= again would silently continue this run: refused unless resume=true
    from policylm.platform.config import ConfigError

    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(ConfigError, match="resume=true"):
        main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "run"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    # a new run on the same storage_path (out=B, no resume) trains from step 0, and leaves the
    # first run's checkpoints (resumed ones among them) as they were
    a_files = {p: p.stat().st_mtime_ns for p in storage.rglob("*") if p.is_file()}
    assert any("checkpoint" in str(p) for p in a_files)
    second = main(sft_cfg(small_dataset, tiny_model_dir, tmp_path / "B", max_steps=12,
                          train={"storage_path": str(storage), "num_workers": 1,
                                 "cpus_per_worker": 1},
                          eval_steps=100))
    metrics = json.loads((tmp_path / "B" / "metrics.json").read_text())
    assert metrics["resumed"] is False and metrics["attempts"] == 1
    notes = [json.loads(line) for line in (tmp_path / "B" / "train_notes.jsonl").read_text()
             .splitlines()]
    assert [n["resumed"] for n in notes if n.get("attempt") == "start"] == [False]
    steps = [s for s, _ in second["train_loss"]]
    assert steps == list(range(1, 13))  # every step of its own, from step 0
    assert {p: p.stat().st_mtime_ns for p in a_files if p.exists()} == a_files  # A untouched
