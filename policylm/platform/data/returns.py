"""Return-to-go maths: pure numpy, no Ray.

``rtg[t] = r[t] + gamma * rtg[t+1]``. At the last step of an episode that was *terminated* the
future is zero; at one that was *truncated* (time limit, or the collector stopped) the future
is unknown, so it is ``bootstrap`` (an estimate of the value of the final observation; ``0``
when none is given, which makes rtg the return actually observed).
"""

from __future__ import annotations

import numpy as np


def returns_to_go(
    rewards: np.ndarray,
    gamma: float = 1.0,
    terminated: bool = True,
    bootstrap: float = 0.0,
) -> np.ndarray:
    """Return-to-go of one episode. ``rewards``: shape (T,); result float64, shape (T,).

    >>> returns_to_go(np.array([1.0, 2.0, 3.0]))
    array([6., 5., 3.])
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    out = np.empty_like(r)
    future = 0.0 if terminated else float(bootstrap)
    for t in range(len(r) - 1, -1, -1):
        future = r[t] + gamma * future
        out[t] = future
    return out


def segment_returns_to_go(
    rewards: np.ndarray,
    episode_ids: np.ndarray,
    steps: np.ndarray,
    terminated: np.ndarray,
    gamma: float = 1.0,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """Return-to-go for many episodes stored row-wise in any order (one row per step).

    Rows are grouped by ``episode_ids`` and ordered by ``steps`` within each; an episode counts
    as terminated when its last row has ``terminated`` set. ``bootstrap`` (per row; the value at
    each episode's last row is used) applies to episodes that did not terminate. The result is
    aligned with the input rows.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.empty_like(rewards)
    ids = np.asarray(episode_ids)
    order = np.lexsort((np.asarray(steps), ids))
    sorted_ids = ids[order]
    bounds = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    for seg in np.split(order, bounds):
        if len(seg) == 0:
            continue
        last = seg[-1]
        boot = 0.0 if bootstrap is None else float(np.asarray(bootstrap)[last])
        out[seg] = returns_to_go(rewards[seg], gamma, bool(np.asarray(terminated)[last]), boot)
    return out


def episode_return(rewards: np.ndarray, gamma: float = 1.0) -> float:
    """Discounted sum of one episode's rewards (``gamma=1``: the plain return)."""
    r = np.asarray(rewards, dtype=np.float64)
    return float(np.sum(r * gamma ** np.arange(len(r))))


def scale_returns(values: np.ndarray, scale: float) -> np.ndarray:
    """Divide returns by ``scale`` (Decision Transformer's return scaling); ``scale`` > 0."""
    if scale <= 0:
        raise ValueError(f"return scale must be > 0, got {scale}")
    return np.asarray(values, dtype=np.float64) / scale


def group_advantages(returns: np.ndarray, groups: np.ndarray, eps: float = 1e-6
                     ) -> tuple[np.ndarray, np.ndarray]:
    """GRPO advantages of episodes: each return normalised within its group (the episodes played
    from one seed): ``(R - mean) / std`` with the population std. A group whose returns have no
    spread (std <= ``eps``) carries no signal: its advantages are 0 and ``keep`` is False.

    Returns ``(advantages[N], keep[N])``, aligned with the inputs.
    """
    r = np.asarray(returns, dtype=np.float64)
    g = np.asarray(groups)
    adv = np.zeros_like(r)
    keep = np.zeros(len(r), dtype=bool)
    for key in np.unique(g):
        idx = np.flatnonzero(g == key)
        std = r[idx].std()
        if len(idx) > 1 and std > eps:
            adv[idx] = (r[idx] - r[idx].mean()) / std
            keep[idx] = True
    return adv, keep


def step_group_advantages(values: np.ndarray, groups: np.ndarray, states: np.ndarray,
                          eps: float = 1e-6) -> np.ndarray:
    """GiGPO's step-level advantages (Feng et al. 2025, "Group-in-Group Policy Optimization"):
    the steps of one group (the episodes played from one seed) that saw the same state form an
    anchor group, and each step's ``values`` (its discounted return-to-go) is normalised within
    it, ``(G - mean) / std`` with the population std. A state seen once in its group, or whose
    values have no spread (std <= ``eps``), gives 0: nothing there tells one action from another.

    ``values``, ``groups`` and ``states`` have one entry per step; the result is aligned with them.
    """
    v = np.asarray(values, dtype=np.float64)
    adv = np.zeros_like(v)
    keys = list(zip(np.asarray(groups).tolist(), np.asarray(states).tolist(), strict=True))
    anchors: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        anchors.setdefault(key, []).append(i)
    for rows in anchors.values():
        idx = np.asarray(rows)
        std = v[idx].std()
        if len(idx) > 1 and std > eps:
            adv[idx] = (v[idx] - v[idx].mean()) / std
    return adv
