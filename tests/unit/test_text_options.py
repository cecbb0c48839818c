"""The env text options: recorded with the rows played, carried by the dataset and adapter
records, and checked before a policy plays text made otherwise."""

import json

import pyarrow.parquet as pq
import pytest

from policylm.jobs.build_dataset import dataset_text_options
from policylm.platform.data import trajectories as tr
from policylm.platform.data.datasets import DatasetError
from policylm.platform.envs import make_adapter
from policylm.platform.policies import PolicyError, check_uri
from policylm.platform.records import (
    PromptFormError,
    PromptRecord,
    adapter_record,
    check_text_options,
    read_record,
    write_record,
)
from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks, write_chunk


def test_each_adapter_names_the_options_that_shape_its_text():
    assert make_adapter("CartPole-v1", decimals=3).text_options == {"decimals": 3}
    assert make_adapter("BabyAI-MixedTrainLocal-goto-v0", memory=True).text_options == {
        "memory": True}
    assert make_adapter("BabyAI-MixedTrainLocal-goto-v0").text_options == {"memory": False}
    # a Box action space: the codec shapes the action text; bins only with the bins codec
    assert make_adapter("Pendulum-v1", box_codec="numeric").text_options == {
        "decimals": 2, "box_codec": "numeric"}
    assert make_adapter("Pendulum-v1", bins=7).text_options == {
        "decimals": 2, "box_codec": "bins", "bins": 7}
    # a Discrete action space: the codec options change nothing, so they are not named
    assert make_adapter("Acrobot-v1", bins=7).text_options == {"decimals": 2}


def test_record_round_trip_and_bad_text_options(tmp_path):
    record = PromptRecord("compact", 2, text_options={"memory": True})
    write_record(tmp_path, record)
    assert json.loads((tmp_path / "policylm.json").read_text())["text_options"] == {
        "memory": True}
    assert read_record(tmp_path) == record
    # a record written before text options were recorded: unknown, not empty
    (tmp_path / "policylm.json").write_text('{"prompt_form": "compact", "history": 0}')
    assert read_record(tmp_path).text_options is None
    (tmp_path / "policylm.json").write_text('{"history": 0, "text_options": [1]}')
    with pytest.raises(PromptFormError, match=r"text_options is \[1\], not an object"):
        read_record(tmp_path)


def test_an_adapter_takes_its_datasets_text_options(tmp_path):
    write_record(tmp_path, PromptRecord(history=3, text_options={"decimals": 2}))
    assert adapter_record("compact", tmp_path, lead="L") == PromptRecord(
        "compact", 3, "L", False, {"decimals": 2})


def test_check_names_the_option_and_the_fix():
    check_text_options(None, {"memory": False}, "BabyAI")  # nothing recorded: nothing to check
    check_text_options({"memory": True}, {"memory": True, "other": 1}, "BabyAI")
    check_text_options({"old_option": 1}, {"memory": False}, "BabyAI")  # only one side names it
    with pytest.raises(PromptFormError) as err:
        check_text_options({"memory": True, "decimals": 2}, {"memory": False, "decimals": 2},
                           "BabyAI-MixedTrainLocal-goto-v0")
    assert str(err.value) == (
        "BabyAI-MixedTrainLocal-goto-v0: the policy was trained on text made with memory=True "
        "(here False); play it in the same env: env_options={memory: true}")


def test_an_adapter_is_not_played_on_text_made_otherwise(tmp_path, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    write_record(adapter, PromptRecord("compact", text_options={"memory": True}))
    uri = f"hf://{tiny_model_dir}?adapter={adapter}&dtype=fp32"
    check_uri(uri, make_adapter("BabyAI-MixedTrainLocal-goto-v0", memory=True))
    with pytest.raises(PolicyError, match=r"memory=True \(here False\).*env_options="
                                          r"\{memory: true\}"):
        check_uri(uri, make_adapter("BabyAI-MixedTrainLocal-goto-v0"))


def play_into(directory, decimals: int) -> None:
    adapter = make_adapter("CartPole-v1", decimals=decimals)
    (chunk,) = plan_chunks([(f"d{decimals}", "random:")], 2, decimals, 2)
    write_chunk(EpisodeRunner(adapter, 2).run(chunk.specs, "r"), directory, chunk)


def test_played_files_record_their_text_options(tmp_path):
    play_into(tmp_path / "a", decimals=3)
    (f,) = tr.trajectory_files(tmp_path / "a")
    assert json.loads(pq.read_schema(f).metadata[tr.TEXT_OPTIONS_KEY.encode()]) == {
        "decimals": 3}
    assert tr.text_options_of(tmp_path / "a") == {"decimals": 3}
    # filtering rows keeps the schema, so a file written again says the same
    kept = tr.read_trajectories(tmp_path / "a")
    tr.write_atomic(kept.slice(0, 5), tmp_path / "b" / "kept.parquet")
    assert tr.text_options_of(tmp_path / "b") == {"decimals": 3}
    # files without the metadata (imported rows): unknown
    pq.write_table(kept.replace_schema_metadata(None), tmp_path / "c.parquet")
    assert tr.text_options_of(tmp_path / "c.parquet") is None
    assert dataset_text_options([tmp_path / "a", tmp_path / "c.parquet"]) == {"decimals": 3}


def test_rows_played_with_other_text_are_not_mixed(tmp_path):
    play_into(tmp_path / "a", decimals=2)
    play_into(tmp_path / "b", decimals=4)
    with pytest.raises(DatasetError, match=r"different env text options .*'decimals': 4"):
        dataset_text_options([tmp_path / "a", tmp_path / "b"])
    play_into(tmp_path / "a", decimals=4)  # another chunk into the same directory
    with pytest.raises(tr.TrajectoryError, match="different env text options"):
        tr.text_options_of(tmp_path / "a")
