"""Eq. (4) and eq. (5) against hand-computed values."""

from __future__ import annotations

import math

import torch

from fmn_core.losses import identity_loss, ranking_loss, true_class_probability


def test_true_class_probability():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
    assert torch.allclose(true_class_probability(logits, torch.tensor([1, 1])), torch.tensor([0.75, 0.2]))


def test_ranking_loss_hand_computed():
    # sample 1: pG = 0.75, pL = 0.5  -> max(0, 0.75 - 0.5 + 0.1) = 0.35
    # sample 2: pG = 0.2,  pL = 0.8  -> max(0, 0.2 - 0.8 + 0.1) = 0
    grn = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
    lan = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)]])
    targets = torch.tensor([1, 1])
    assert math.isclose(ranking_loss(grn, lan, targets, margin=0.1).item(), 0.35 / 2, rel_tol=1e-6)
    assert math.isclose(ranking_loss(grn, lan, targets, margin=0.7).item(), (0.95 + 0.1) / 2, rel_tol=1e-6)
    assert ranking_loss(grn, grn, targets, margin=0.0).item() == 0.0


def test_ranking_loss_gradient_only_reaches_the_lan():
    grn = torch.randn(4, 5, requires_grad=True)
    lan = torch.randn(4, 5, requires_grad=True)
    ranking_loss(grn, lan, torch.tensor([0, 1, 2, 3]), margin=1.0).backward()
    assert grn.grad is None and lan.grad is not None and lan.grad.abs().sum() > 0


def test_identity_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert math.isclose(identity_loss(logits, torch.tensor([0])).item(), expected, rel_tol=1e-6)
