"""GRPO's maths by hand: group-normalised advantages and the clipped objective."""

import math

import numpy as np
import pytest
import torch

from policylm.platform.data.returns import group_advantages
from policylm.platform.training.policy_gradient import clipped_loss


def test_group_advantages_by_hand():
    adv, keep = group_advantages([10, 20, 30, 5, 5, 5, 7], ["a", "a", "a", "b", "b", "b", "c"])
    s = math.sqrt(200 / 3)  # population std of 10, 20, 30
    assert adv.tolist() == pytest.approx([-10 / s, 0.0, 10 / s, 0, 0, 0, 0])
    # b has no spread, c is alone: no signal, filtered
    assert keep.tolist() == [True, True, True, False, False, False, False]


def test_clipped_loss_by_hand():
    new = torch.log(torch.tensor([1.5, 1.5, 1.0, 0.5]))
    old = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, 2.0, 1.0])
    loss, stats = clipped_loss(new, old, adv, epsilon=0.2)
    # ratio 1.5, adv +1: min(1.5, 1.2) = 1.2; adv -1: min(-1.5, -1.2) = -1.5;
    # ratio 1, adv 2: 2; ratio .5, adv 1: min(.5, .8) = .5  -> loss = -(1.2 - 1.5 + 2 + .5) / 4
    assert float(loss) == pytest.approx(-(1.2 - 1.5 + 2 + 0.5) / 4)
    assert stats["clip_fraction"] == pytest.approx(3 / 4)  # ratios 1.5, 1.5, .5 are outside
    masked, _ = clipped_loss(new, old, adv, mask=torch.tensor([1, 0, 1, 0]))
    assert float(masked) == pytest.approx(-(1.2 + 2) / 2)
    # importance weights scale each term (steps another policy played)
    weighted, _ = clipped_loss(new, old, adv, weight=torch.tensor([2.0, 0.5, 1.0, 0.0]))
    assert float(weighted) == pytest.approx(-(2 * 1.2 - 0.5 * 1.5 + 2 + 0) / 4)


def test_importance_weight_is_a_constant_of_the_gradient():
    new = torch.log(torch.tensor([1.0, 1.0])).requires_grad_()
    weight = torch.tensor([3.0, 0.5], requires_grad=True)
    loss, _ = clipped_loss(new, torch.zeros(2), torch.tensor([1.0, 1.0]), weight=weight)
    loss.backward()
    # d/dnew of -(w * exp(new)) / 2 at new = 0 is -w / 2; nothing flows into the weight
    assert new.grad.tolist() == pytest.approx([-1.5, -0.25]) and weight.grad is None


def test_kl_penalty_and_gradient():
    new = torch.tensor([0.0, math.log(2.0)], requires_grad=True)
    ref = torch.tensor([0.0, 0.0])
    loss, stats = clipped_loss(new, new.detach(), torch.zeros(2), logp_ref=ref, beta=0.5)
    # k3 at d = ref - new = (0, -ln 2): (0) and (1/2 + ln 2 - 1); mean over 2
    kl = (0.5 + math.log(2) - 1) / 2
    assert stats["kl"] == pytest.approx(kl) and float(loss) == pytest.approx(0.5 * kl)
    loss.backward()
    # d/dnew of k3 = 1 - exp(d) = 1 - 1/2 at the second entry; times beta / 2
    assert new.grad.tolist() == pytest.approx([0.0, 0.5 * 0.5 / 2])
    assert not np.isnan(new.grad.numpy()).any()
