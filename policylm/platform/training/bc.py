"""Behaviour cloning of a plain MLP on the rows a language model was fine-tuned on: the baseline
a user would train instead (RLFT4RL's MLP BC, D4RL's BC).

:func:`bc_rows` joins a built dataset's rows (``episode_id``, ``t``) back to the trajectories
they came from, for the observation vectors and env actions; :func:`train_bc` fits
``build_mlp`` to them (mean squared error on ``Box`` actions, cross-entropy on ``Discrete``), and
the saved checkpoint plays as ``file://<path>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policylm.platform.data import trajectories as tr


class BcDataError(ValueError):
    """Dataset rows that cannot be cloned; the message says which and why."""


@dataclass
class BcResult:
    """A trained MLP and its losses: ``losses`` are (step, training loss) every 10 % of steps;
    ``validation_loss`` is on the held-out rows (None without them)."""

    net: object
    losses: list[tuple[int, float]]
    validation_loss: float | None


def dataset_rows(dataset: str | Path, split: str = "train", skills: Sequence[str] | None = None,
                 columns: Sequence[str] = (tr.EPISODE_ID, tr.T, tr.SKILL)) -> pa.Table:
    """The ``split`` rows of a built dataset (its ``dataset/`` directory or the run directory),
    in the dataset's order, with ``columns`` (which must hold the skill when ``skills`` picks
    rows by it)."""
    base = Path(dataset)
    d = base / "dataset" if (base / "dataset" / split).is_dir() else base
    if not d.is_dir() or not any(d.iterdir()):
        raise BcDataError(f"{base} is not a built dataset; pass a build-dataset run directory")
    files = sorted((d / split).glob("*.parquet"))
    if not files:
        raise BcDataError(f"{d} has no {split} rows (raise build-dataset's validation_fraction "
                          "for held-out rows)")
    rows = pa.concat_tables([pq.read_table(f, columns=list(columns)) for f in files])
    if skills is not None:
        keep = set(skills)
        rows = rows.filter(pa.array([s in keep for s in rows.column(tr.SKILL).to_pylist()]))
        if rows.num_rows == 0:
            raise BcDataError(f"no {split} row of {d} has a skill in {sorted(keep)}")
    return rows


def env_arrays(rows: pa.Table, trajectories: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Observation vectors ``[N, D]`` and env actions ``[N, A]`` of dataset ``rows`` (with
    episode id and step), found in the ``trajectories`` the dataset was built from."""
    steps = tr.read_trajectories(tr.trajectory_dir(trajectories),
                                 columns=[tr.EPISODE_ID, tr.T, tr.OBS, tr.ACTION])
    index = {(e, t): i for i, (e, t) in enumerate(zip(
        steps.column(tr.EPISODE_ID).to_pylist(), steps.column(tr.T).to_pylist(), strict=True))}
    at = []
    for e, t in zip(rows.column(tr.EPISODE_ID).to_pylist(), rows.column(tr.T).to_pylist(),
                    strict=True):
        if (e, t) not in index:
            raise BcDataError(f"dataset row (episode {e}, step {t}) is not in {trajectories}; "
                              "pass the trajectories the dataset was built from")
        at.append(index[(e, t)])
    if not at:
        raise BcDataError("no dataset rows to look up")
    take = pa.array(at, pa.int64())
    obs = np.asarray(steps.column(tr.OBS).take(take).to_pylist(), dtype=np.float32)
    actions = np.asarray(steps.column(tr.ACTION).take(take).to_pylist(), dtype=np.float32)
    return obs.reshape(len(at), -1), actions.reshape(len(at), -1)


def bc_rows(dataset: str | Path, trajectories: str | Path, split: str = "train",
            skills: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Observation vectors and env actions of a dataset's ``split`` rows (with ``skills``, only
    those skills' rows): :func:`env_arrays` of :func:`dataset_rows`."""
    return env_arrays(dataset_rows(dataset, split, skills), trajectories)


def train_bc(obs: np.ndarray, actions: np.ndarray, space: gym.Space, *,
             hidden: Sequence[int] = (256, 256), steps: int = 3000, batch_size: int = 256,
             lr: float = 1e-3, seed: int = 0,
             validation: tuple[np.ndarray, np.ndarray] | None = None) -> BcResult:
    """Fit ``build_mlp(D, width, hidden)`` to ``(obs, actions)`` with Adam for ``steps``
    minibatches: regression onto ``Box`` actions (mean squared error), classification of
    ``Discrete`` ones (cross-entropy)."""
    import torch

    from policylm.platform.policies.network import action_width, build_mlp

    if len(obs) == 0 or len(obs) != len(actions):
        raise BcDataError(f"need as many observations as actions (> 0), got {len(obs)} and "
                          f"{len(actions)}")
    box = isinstance(space, gym.spaces.Box)
    torch.manual_seed(seed)
    net = build_mlp(obs.shape[1], action_width(space), hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def tensors(o: np.ndarray, a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # inputs as float32; targets as float32 values (Box) or int64 class indices (Discrete)
        return (torch.as_tensor(o, dtype=torch.float32),
                torch.as_tensor(a, dtype=torch.float32) if box
                else torch.as_tensor(a[:, 0], dtype=torch.int64))

    x, y = tensors(obs, actions)
    loss_fn = torch.nn.functional.mse_loss if box else torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(seed)
    losses: list[tuple[int, float]] = []
    every = max(steps // 10, 1)
    net.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
        loss = loss_fn(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            losses.append((step, float(loss.detach())))
    net.eval()
    held = None
    if validation is not None and len(validation[0]):
        vx, vy = tensors(*validation)
        with torch.no_grad():
            held = float(loss_fn(net(vx), vy))
    return BcResult(net, losses, held)
