"""The ``train:`` section of the training jobs (``sft``, ``grpo``): how many Ray Train workers,
on what resources, placed how, restarted how often, checkpointing where."""

from __future__ import annotations

from dataclasses import dataclass

from policylm.platform.config import field, require

# Ray placement-group strategies for the training workers
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class TrainConfig:
    """Ray Train workers of a training job (``train.<key>``)."""

    num_workers: int = field(1, doc="Ray Train workers (data parallel); 0: train in the job's "
                             "own process (Ray Train's local mode: no worker to start, no "
                             "restarts; for small runs and debugging)")
    use_gpu: bool = field(False, doc="GPU workers (nccl); CPU workers use gloo")
    gpus_per_worker: float = field(1.0, doc="with use_gpu: GPUs per worker; below 1 several "
                                            "workers share a GPU (gloo then, as nccl needs "
                                            "one GPU per rank)")
    cpus_per_worker: float = field(
        0.0, doc="CPUs per worker; 0: the cluster's CPUs divided among the workers (torch uses "
                 "that many threads: Ray gives a 1-CPU worker a single thread)")
    max_failures: int = field(2, doc="restarts from the latest checkpoint after worker failures")
    placement: str = field("PACK", doc="how workers spread over nodes: PACK (fill a node first) "
                                       "or SPREAD (one per node where it can); STRICT_ forms too")
    storage_path: str = field("", doc="where Ray Train keeps checkpoints: a path every node reads "
                              "(NFS) or a URI (s3://bucket/prefix, gs://...); empty: "
                              "<out>/ray_results, which a run on several nodes refuses unless "
                              "every node sees it")
    record_rows: bool = field(False, doc="write the row indices each worker trains on and "
                                         "evaluates to rows.jsonl (to check the data split)")

    def validate(self) -> None:
        require(self.num_workers >= 0, "train.num_workers",
                "must be >= 0 (0: in the job's own process)")
        require(self.cpus_per_worker >= 0, "train.cpus_per_worker", "must be >= 0 (0: auto)")
        require(self.gpus_per_worker > 0, "train.gpus_per_worker", "must be > 0")
        require(self.max_failures >= 0, "train.max_failures", "must be >= 0")
        require(self.placement in PLACEMENTS, "train.placement",
                f"use one of {', '.join(PLACEMENTS)}")
