"""The attack library on small models whose gradients are known."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conftest import Site
from figgen.attacks import fgsm, pgd
from test_faults import failed_cause

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


IMAGES = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))  # [2, 3, 8, 8]
LABELS = torch.tensor([0, 2])  # [2]


def fgsm_with(images: object = IMAGES, labels: object = LABELS, eps: object = 8 / 255) -> Tensor:
    """FGSM on the conv model with one argument replaced."""
    return fgsm(conv(), images, labels, eps)


def pgd_with(**changed: object) -> Tensor:
    """PGD on the conv model with some arguments replaced (early stop on, to use check_every)."""
    args = {"images": IMAGES, "labels": LABELS, "eps": 8 / 255, "alpha": 2 / 255, "steps": 3}
    options = {k: changed.pop(k) for k in ("check_every",) if k in changed}
    return pgd(conv(), **(args | changed), early_stop=True, **options)


# (argument, bad value, exception, what the message must say)
BAD = [
    ("eps", -0.1, ValueError, "eps must be a finite number >= 0, got -0.1"),
    ("eps", float("inf"), ValueError, "eps must be a finite number >= 0"),
    ("eps", float("nan"), ValueError, "eps must be a finite number >= 0"),
    ("eps", "8/255", TypeError, "eps must be a real number"),
    ("images", IMAGES * 255, ValueError, "images must be in [0, 1], got values in ["),
    ("images", IMAGES - 0.5, ValueError, "images must be in [0, 1]"),
    ("images", (IMAGES * 255).to(torch.uint8), TypeError, "images must be floating point"),
    ("images", IMAGES.double(), TypeError, "torch.float64 but the model's parameters are"),
    ("images", IMAGES.permute(0, 2, 3, 1), ValueError, "looks channels-last (N, H, W, C)"),
    ("images", IMAGES[0], ValueError, "labels must have shape (3,)"),
    ("images", IMAGES.numpy(), TypeError, "images must be a torch.Tensor"),
    ("labels", torch.tensor([0, -100]), ValueError, "got -100 (cross-entropy's ignore_index)"),
    ("labels", torch.tensor([-1, 0]), ValueError, "labels must be class indices >= 0, got -1"),
    ("labels", torch.tensor([0, 3]), ValueError, "labels must be class indices < 3"),
    ("labels", torch.tensor([0.0, 2.0]), TypeError, "labels must be an integer tensor"),
    ("labels", torch.tensor([True, False]), TypeError, "labels must be an integer tensor"),
    ("labels", torch.tensor([[0], [2]]), ValueError, "labels must have shape (2,)"),
    ("labels", [0, 2], TypeError, "labels must be a torch.Tensor"),
]
BAD_PGD = BAD + [
    ("alpha", 0.0, ValueError, "alpha must be a finite number > 0, got 0.0"),
    ("alpha", -2 / 255, ValueError, "alpha must be a finite number > 0"),
    ("steps", -1, ValueError, "steps must be an int >= 1, got -1"),
    ("steps", 0, ValueError, "steps must be an int >= 1, got 0"),
    ("steps", 3.0, TypeError, "steps must be an int >= 1, got float"),
    ("steps", True, TypeError, "steps must be an int >= 1, got bool"),
    ("check_every", 0, ValueError, "check_every must be an int >= 1, got 0"),
]


def raises_naming(call: Callable[[], object], error: type, message: str) -> None:
    """Assert the call raises error with the message, without the model having run.

    A label past the last class is the exception: it is known only from the logits, so the
    model runs once, and the error comes before the loss (on CPU torch's own is an IndexError).
    """
    calls = []
    hook = nn.Module.__call__

    def counting(self: nn.Module, *args: object, **kwargs: object) -> object:
        calls.append(self)
        return hook(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nn.Sequential, "__call__", counting)
        with pytest.raises(error) as err:
            call()
    assert message in str(err.value)
    assert len(calls) == (1 if "< 3" in message else 0)


@pytest.mark.parametrize(("name", "value", "error", "message"), BAD, ids=[b[3] for b in BAD])
def test_fgsm_refuses_each_bad_argument_by_name_before_computing(
    name: str, value: object, error: type, message: str
) -> None:
    raises_naming(lambda: fgsm_with(**{name: value}), error, message)


@pytest.mark.parametrize(
    ("name", "value", "error", "message"), BAD_PGD, ids=[b[3] for b in BAD_PGD]
)
def test_pgd_refuses_each_bad_argument_by_name_before_computing(
    name: str, value: object, error: type, message: str
) -> None:
    raises_naming(lambda: pgd_with(**{name: value}), error, message)


def test_a_label_past_the_last_class_leaves_the_model_as_it_was() -> None:
    model = conv().train()
    with pytest.raises(ValueError, match="< 3"):
        pgd(model, IMAGES, torch.tensor([0, 3]), 8 / 255, 2 / 255, 3)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_the_limits_themselves_and_other_dtypes_are_accepted() -> None:
    assert torch.equal(fgsm_with(eps=0), IMAGES)  # an int budget of 0: nothing moves
    assert torch.equal(fgsm_with(images=torch.zeros(2, 3, 8, 8)).min(), torch.tensor(0.0))
    assert torch.equal(fgsm_with(labels=LABELS.int()), fgsm_with())  # any integer dtype
    assert pgd_with(steps=1, check_every=1).shape == IMAGES.shape
    # The dtype rule is "the model's", not "float32": a float64 model takes float64 images.
    adv = fgsm(conv().double(), IMAGES.double(), LABELS, 8 / 255)
    assert adv.dtype == torch.float64 and (adv - IMAGES.double()).abs().max() <= 8 / 255 + 1e-9
    # Half images: a label of 2049 is no float16, yet it is compared exactly with the classes.
    wide = nn.Linear(D, 2050).half()
    assert fgsm(wide, torch.rand(1, D).half(), torch.tensor([2049]), 0.1).dtype == torch.half
    with pytest.raises(ValueError, match="< 2050.*got 2051"):
        fgsm(wide, torch.rand(1, D).half(), torch.tensor([2051]), 0.1)
    empty = torch.zeros(0, 3, 8, 8)  # [0, 3, 8, 8]
    assert pgd(conv(), empty, torch.zeros(0, dtype=torch.long), 0.1, 0.01, 2).shape == empty.shape


ATTACK = """import torch
from figgen.attacks import pgd

model = torch.nn.Linear(4, 3)
images, labels = torch.rand(2, 4), torch.tensor([0, 2])
"""


@pytest.mark.parametrize(("call", "expected"), [
    ("pgd(model, images, torch.tensor([0, -100]), 0.1, 0.01, 5)",
     ["ValueError: labels must be class indices >= 0, got -100 (cross-entropy's ignore_index)"]),
    ("pgd(model, images * 255, labels, 0.1, 0.01, 5)",
     ["ValueError: images must be in [0, 1], got values in [", "]: divide by 255"]),
], ids=["ignored-label", "images-0-255"])
def test_a_figure_calling_an_attack_with_a_bad_argument_fails_naming_it(
    site: Site, call: str, expected: list[str]
) -> None:
    # Without the checks both return an image (the input itself, or a clamped other image)
    # and the figure is drawn.
    cause = failed_cause(site, ATTACK + call)
    assert all(part in cause for part in expected)
