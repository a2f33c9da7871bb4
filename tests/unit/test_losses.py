"""Eq. (4) and eq. (5) against hand-computed values; label smoothing and the batch-hard triplet loss (options)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fmn_core.losses import batch_hard_triplet_loss, identity_loss, ranking_loss, true_class_probability


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


def test_label_smoothing_raises_the_loss_of_a_confident_correct_logit():
    logits, target = torch.tensor([[10.0, 0.0, 0.0]]), torch.tensor([0])
    plain, smoothed = identity_loss(logits, target), identity_loss(logits, target, label_smoothing=0.1)
    # the target is 0.9 one-hot + 0.1 uniform: -(0.9 + 0.1/3) log p0 - (0.1/3) (log p1 + log p2)
    log_p = torch.log_softmax(logits, dim=1)[0]
    expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
    assert smoothed.item() > 10 * plain.item() and math.isclose(smoothed.item(), expected.item(), rel_tol=1e-5)
    assert identity_loss(logits, target, label_smoothing=0.0).item() == plain.item()


def _brute_force_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """Every anchor's farthest positive and nearest negative, by loops over the pairs."""
    total = 0.0
    for a in range(len(labels)):
        distance = [math.dist(features[a].tolist(), features[b].tolist()) for b in range(len(labels))]
        positives = [distance[b] for b in range(len(labels)) if labels[b] == labels[a]]
        negatives = [distance[b] for b in range(len(labels)) if labels[b] != labels[a]]
        total += max(0.0, max(positives) - min(negatives) + margin) if negatives else 0.0
    return total / len(labels)


def test_triplet_loss_is_zero_on_well_separated_identities_and_positive_on_hard_ones():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    separated = centres[labels] + 0.01 * torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [-1, -1]])
    assert batch_hard_triplet_loss(separated, labels, margin=0.3).item() == 0.0
    hard = separated.clone()
    hard[1] = centres[1]  # an image of identity 0 lies on identity 1
    loss = batch_hard_triplet_loss(hard, labels, margin=0.3)
    assert loss.item() > 1.0 and math.isclose(loss.item(), _brute_force_triplet(hard, labels, 0.3), rel_tol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_loss_matches_a_brute_force_computation(seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(12, 5, generator=generator)
    labels = torch.tensor(list(itertools.chain.from_iterable([i] * 3 for i in range(4))))
    for margin in (0.0, 0.3, 2.0):
        expected = _brute_force_triplet(features, labels, margin)
        assert math.isclose(batch_hard_triplet_loss(features, labels, margin).item(), expected, rel_tol=1e-5), margin


def test_triplet_gradients_are_finite_with_duplicates_and_zero_without_negatives():
    features = torch.randn(4, 3, requires_grad=True)
    duplicated = torch.cat([features[:1], features[:1], features[2:]])  # two identical images: a zero distance
    batch_hard_triplet_loss(duplicated, torch.tensor([0, 0, 1, 1]), 0.3).backward()
    assert torch.isfinite(features.grad).all()
    features.grad = None
    loss = batch_hard_triplet_loss(features, torch.zeros(4, dtype=torch.long), 0.3)  # one identity: no negative
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(features.grad, torch.zeros_like(features))
