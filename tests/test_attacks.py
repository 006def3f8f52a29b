"""The attack library on small models whose gradients are known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from figgen.attacks import fgsm, pgd

C, D = 3, 4  # classes, input size


def linear() -> nn.Linear:
    """A linear classifier on flat inputs [B, D] with fixed weights."""
    torch.manual_seed(0)
    return nn.Linear(D, C)


def conv() -> nn.Sequential:
    """A small convolutional classifier of images [B, 3, 8, 8], with dropout (train mode)."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 36, C)
    )


def test_fgsm_moves_every_value_by_eps_along_the_sign_of_the_gradient() -> None:
    model = linear()
    x = torch.rand(5, D) * 0.4 + 0.3  # [5, D], far enough from 0 and 1 not to be clipped
    y = torch.tensor([0, 1, 2, 0, 1])
    # Cross-entropy of a linear model: d/dx = (softmax(xW' + b) - onehot(y)) W.
    with torch.no_grad():
        grad = (F.softmax(model(x), dim=1) - F.one_hot(y, C).float()) @ model.weight  # [5, D]
    eps = 0.05
    assert torch.allclose(fgsm(model, x, y, eps) - x, eps * grad.sign(), atol=1e-6)
    assert torch.allclose(fgsm(model, x, y, eps, targeted=True) - x, -eps * grad.sign(), atol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_every_attack_stays_within_its_budget_and_the_valid_range(
    targeted: bool, random_start: bool
) -> None:
    model, eps = conv(), 8 / 255
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))  # [6, 3, 8, 8]
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    gen = torch.Generator().manual_seed(3)
    results = [
        fgsm(model, x, y, eps, targeted=targeted),
        pgd(model, x, y, eps, 2 / 255, 10, random_start=random_start, targeted=targeted,
            generator=gen),
    ]
    for adv in results:
        assert adv.shape == x.shape and not adv.requires_grad
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1


def test_targeted_pgd_reaches_its_target_and_untargeted_leaves_the_true_class() -> None:
    model = linear()
    with torch.no_grad():  # class k is the largest of the first C inputs: every class reachable
        model.weight.copy_(10 * torch.eye(C, D))
        model.bias.zero_()
    x = 0.3 + 0.4 * torch.rand(8, D, generator=torch.Generator().manual_seed(4))  # [8, D]
    y = model(x).argmax(dim=1).detach()  # [8] the model's own classes count as true
    target = (y + 1) % C  # [8]
    adv = pgd(model, x, target, eps=0.5, alpha=0.02, steps=100, targeted=True)
    assert (model(adv).argmax(dim=1) == target).all()
    away = pgd(model, x, y, eps=0.5, alpha=0.02, steps=100)
    assert (model(away).argmax(dim=1) != y).all()
    stopped = pgd(model, x, target, eps=0.5, alpha=0.02, steps=100, targeted=True, early_stop=True)
    assert (model(stopped).argmax(dim=1) == target).all()
    # Stopping early halts each item at its first success, so it never moved farther, and
    # items that succeed long before the last step stay well inside the budget.
    moved, full = (stopped - x).abs().amax(dim=1), (adv - x).abs().amax(dim=1)  # [8] each
    assert (moved <= full + 1e-6).all() and (moved < full - 0.1).any()


def test_attacks_leave_parameters_without_gradients_and_restore_the_mode() -> None:
    model = conv().train()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1])
    first = pgd(model, x, y, 8 / 255, 2 / 255, 5)
    second = pgd(model, x, y, 8 / 255, 2 / 255, 5)
    assert torch.equal(first, second)  # dropout was off during the attack
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_the_random_start_is_deterministic_for_a_seed() -> None:
    model = conv()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 2])

    def attack(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return pgd(model, x, y, 8 / 255, 2 / 255, 3, random_start=True, generator=gen)

    assert torch.equal(attack(7), attack(7)) and not torch.equal(attack(7), attack(8))
