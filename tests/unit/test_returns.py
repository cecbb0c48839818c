"""Return-to-go against values computed by hand."""

import numpy as np
import pytest

from policylm.platform.data.returns import (
    episode_return,
    returns_to_go,
    scale_returns,
    segment_returns_to_go,
)


def test_undiscounted_rtg_is_suffix_sum():
    # rewards 1, 2, 3 -> 1+2+3=6, 2+3=5, 3
    assert returns_to_go(np.array([1.0, 2.0, 3.0])).tolist() == [6.0, 5.0, 3.0]


def test_discounted_rtg_by_hand():
    # gamma 0.5: t2 = 4; t1 = 2 + 0.5*4 = 4; t0 = 1 + 0.5*4 = 3
    assert returns_to_go(np.array([1.0, 2.0, 4.0]), gamma=0.5).tolist() == [3.0, 4.0, 4.0]


def test_truncated_episode_bootstraps_and_terminated_ignores_bootstrap():
    r = np.array([1.0, 1.0])
    # truncated, bootstrap 10, gamma 0.9: t1 = 1 + 0.9*10 = 10; t0 = 1 + 0.9*10 = 10
    assert returns_to_go(r, 0.9, terminated=False, bootstrap=10.0) == pytest.approx([10.0, 10.0])
    # terminated: the future is zero whatever bootstrap says: t1 = 1; t0 = 1 + 0.9 = 1.9
    assert returns_to_go(r, 0.9, terminated=True, bootstrap=10.0) == pytest.approx([1.9, 1.0])


def test_segments_in_shuffled_row_order():
    # episode a: rewards 1,2 (terminated) -> 3,2 ; episode b: 5,0,1 (truncated) -> 6,1,1
    ids = np.array(["b", "a", "b", "a", "b"])
    steps = np.array([2, 1, 0, 0, 1])
    rewards = np.array([1.0, 2.0, 5.0, 1.0, 0.0])
    term = np.array([False, True, False, False, False])
    out = segment_returns_to_go(rewards, ids, steps, term)
    assert out.tolist() == [1.0, 2.0, 6.0, 3.0, 1.0]


def test_segment_bootstrap_only_for_unterminated_episodes():
    ids = np.array(["a", "a", "b"])
    steps = np.array([0, 1, 0])
    rewards = np.array([1.0, 1.0, 1.0])
    term = np.array([False, True, False])
    boot = np.array([0.0, 100.0, 4.0])  # a terminated: ignored; b truncated: 1 + 0.5*4 = 3
    out = segment_returns_to_go(rewards, ids, steps, term, gamma=0.5, bootstrap=boot)
    assert out.tolist() == [1.5, 1.0, 3.0]


def test_episode_return_and_scaling():
    assert episode_return(np.array([1.0, 1.0, 1.0]), gamma=0.5) == 1.75
    assert scale_returns(np.array([500.0, 50.0]), 100.0).tolist() == [5.0, 0.5]
    with pytest.raises(ValueError, match="scale must be > 0"):
        scale_returns(np.array([1.0]), 0.0)
