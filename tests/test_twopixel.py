"""The two-pixel world of the plane figures: regions, training set, classifiers and attacks."""

from __future__ import annotations

import numpy as np
import pytest

from figgen.twopixel.adversarial import EPS_GREY, Attack, check, plausible_attacks
from figgen.twopixel.augment import BRIGHTNESS, CONTRAST, N_COPIES, augment
from figgen.twopixel.ensemble import BOUNDARY_SEEDS, FAMILIES, train_ensemble
from figgen.twopixel.models import fit_many, predict
from figgen.twopixel.search import (
    GRID,
    SEARCH_SEEDS,
    SEARCH_SPECS,
    Plausible,
    boundary_length,
    count_islands,
    find_plausible,
    qualifies,
    score,
)
from figgen.twopixel.world import (
    CAT,
    CAT_REGION,
    DOG,
    DOG_REGION,
    FAR,
    NEITHER,
    PIXEL_MAX,
    distance_to_data,
    far_mask,
    grid,
    training_set,
    true_class,
)


@pytest.fixture(scope="module")
def plausible() -> Plausible:
    """The plausible classifier, found once for the module."""
    return find_plausible()


@pytest.fixture(scope="module")
def attacks(plausible: Plausible) -> list[Attack]:
    """Its three attacks, as the attacks and adversarial_training figures get them."""
    return plausible_attacks()


def test_the_six_training_images_lie_in_their_true_regions() -> None:
    points, labels = training_set()
    assert points.shape == (6, 2) and sorted(labels.tolist()) == [CAT] * 3 + [DOG] * 3
    assert CAT_REGION.contains(points[labels == CAT]).all()
    assert DOG_REGION.contains(points[labels == DOG]).all()
    assert (true_class(points) == labels).all()
    assert len({tuple(p) for p in points}) == 6 and (points >= 0).all() and (points <= 255).all()


def test_the_regions_are_disjoint_and_leave_most_of_the_plane_to_noise() -> None:
    _, points = grid(128)
    cat, dog = CAT_REGION.contains(points), DOG_REGION.contains(points)
    assert not (cat & dog).any()
    assert 0.5 < (true_class(points) == NEITHER).mean() < 0.95


def test_every_classifier_of_the_ensemble_classifies_all_six_training_points() -> None:
    points, labels = training_set()
    members = train_ensemble(BOUNDARY_SEEDS)
    assert len(members) == len(FAMILIES) * BOUNDARY_SEEDS
    for m in members:
        assert (predict(m.model, points) == labels).all(), (m.spec.describe(), m.seed)


def test_the_classifiers_of_the_ensemble_draw_different_boundaries() -> None:
    _, points = grid(64)
    maps = {tuple(predict(m.model, points)) for m in train_ensemble(BOUNDARY_SEEDS)}
    assert len(maps) == len(FAMILIES) * BOUNDARY_SEEDS


def test_the_plausible_classifier_is_correct_on_the_data_and_the_strangest_that_qualifies(
    plausible: Plausible,
) -> None:
    points, labels = training_set()
    assert (predict(plausible.model, points) == labels).all()
    assert plausible.scores.correct and min(plausible.scores.coverage.values()) >= 0.9
    far = far_mask(GRID)
    assert plausible.scores == score(plausible.model, far)  # its scores are its own
    # Re-train one searched architecture independently: none of its qualifying seeds is stranger.
    rivals = [score(m, far) for m in fit_many(SEARCH_SPECS[0], list(SEARCH_SEEDS), points, labels)]
    assert any(qualifies(r) for r in rivals)
    assert all(r.strangeness <= plausible.scores.strangeness for r in rivals if qualifies(r))


def test_boundary_length_and_islands_are_measured_on_known_maps() -> None:
    classes = np.zeros((5, 5), dtype=int)
    classes[:, 3:] = DOG  # one vertical boundary, 5 cell edges long
    everywhere = np.ones((5, 5), dtype=bool)
    assert boundary_length(classes, everywhere) == pytest.approx(5 * PIXEL_MAX / 4)
    assert count_islands(classes) == 0
    classes[0, 0] = DOG  # a one-cell island of dog in the cats
    assert count_islands(classes) == 1


def test_the_three_attacks_on_the_plausible_classifier_are_of_the_kinds_they_claim(
    plausible: Plausible, attacks: list[Attack]
) -> None:
    model = plausible.model
    assert [a.kind for a in attacks] == [1, 2, 3]
    for a in attacks:
        assert np.abs(a.end - a.start).max() <= EPS_GREY + 1e-3
        assert (a.end >= 0).all() and (a.end <= PIXEL_MAX).all()
        start = a.start[None]
        assert true_class(start)[0] == a.label  # a natural image of its class
        assert predict(model, start)[0] == a.label  # that the model got right
    one, two, three = attacks
    # 1: still a true cat, now called dog.
    assert one.label == CAT and true_class(one.end[None])[0] == CAT
    assert predict(model, one.end[None])[0] == DOG
    # 2: a dog moved out of both regions into empty space, now called cat.
    assert two.label == DOG and true_class(two.end[None])[0] == NEITHER
    assert distance_to_data(two.end[None])[0] > FAR
    assert predict(model, two.end[None])[0] == CAT
    # 3: a cat moved into the true dog region.
    assert three.label == CAT and true_class(three.end[None])[0] == DOG


def test_the_kind_check_rejects_a_mislabelled_attack(
    plausible: Plausible, attacks: list[Attack]
) -> None:
    one, two, three = attacks
    swapped = [Attack(3, one.start, one.end, one.label, one.from_training, 0.0), two, three]
    with pytest.raises(AssertionError, match="attack 3"):
        check(plausible.model, swapped)
    with pytest.raises(AssertionError, match="not one of each kind"):
        check(plausible.model, [one, one, three])
    check(plausible.model, attacks)  # and the real three pass


def test_augmented_copies_change_only_brightness_and_contrast() -> None:
    points, labels = training_set()
    copies, copy_labels = augment(points, labels, 5)
    assert copies.shape == (36, 2) and (copy_labels[6:] == np.repeat(labels, 5)).all()
    originals = np.repeat(points, 5, axis=0)  # [30, 2]
    extra = copies[6:]
    contrast = np.diff(extra, axis=1)[:, 0] / np.diff(originals, axis=1)[:, 0]
    shift = extra.mean(axis=1) - originals.mean(axis=1)
    assert (np.abs(contrast - 1) <= CONTRAST + 1e-9).all()
    assert (np.abs(shift) <= BRIGHTNESS + 1e-9).all()
    assert np.abs(contrast - 1).max() > CONTRAST / 2 and np.abs(shift).max() > BRIGHTNESS / 2


def test_augmented_copies_keep_their_meaning_and_a_copy_that_would_not_is_refused() -> None:
    points, labels = training_set()
    copies, copy_labels = augment(points, labels, N_COPIES)
    assert (true_class(copies) == copy_labels).all()
    edge = np.array([[CAT_REGION.center[0], 0.0]])  # a "cat" outside the cat region
    with pytest.raises(ValueError, match="left their true region"):
        augment(edge, np.array([CAT]), 2)
