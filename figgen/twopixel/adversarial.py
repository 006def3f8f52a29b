"""The three attacks on the plausible classifier, and adversarial training against them.

The attacks are real untargeted PGD attacks (figgen.attacks) with a small L-infinity budget,
run from natural images: the six training images and the points of a lattice inside the true
regions. The three kinds of the article are defined from the true regions and the model
(attack_kinds); one attack of each kind is chosen, training images first, then the clearest
(see clarity), from starts far enough apart that the arrows do not overlap. If any kind has
no attack, the search raises: no arrow is ever drawn that an attack did not make.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from figgen.attacks import pgd
from figgen.twopixel.models import MLPSpec, fit, predict, to_input
from figgen.twopixel.search import find_plausible
from figgen.twopixel.world import (
    CAT,
    CAT_REGION,
    DOG,
    DOG_REGION,
    FAR,
    NEITHER,
    PIXEL_MAX,
    distance_to_data,
    grid,
    natural_points,
    training_set,
    true_class,
)
from pelican_figgen.intermediates import cached

EPS_GREY = 24  # the L-infinity budget, in grey levels
ALPHA_GREY = 2.0  # PGD step size, in grey levels
STEPS = 40
ATTACK_NAME = f"PGD, {STEPS} steps"
LATTICE = 4.0  # grey levels between the natural start points inside the regions
SEPARATION = 30.0  # grey levels (L-inf) between the starts of two attacks
TOP = 200  # best attacks per kind that the joint choice considers
FINE = 256  # grid for distances to edges: one cell per grey level
KINDS = {
    1: "a cat moved within the true cat region to a point the model calls dog",
    2: f"a dog moved into empty space, over {FAR:g} grey levels from the data, called cat",
    3: "a cat moved into the true dog region",
}


@dataclass(frozen=True)
class Attack:
    """One attack: where it started and ended (grey levels), the start's class, its kind."""

    kind: int
    start: np.ndarray  # [2]
    end: np.ndarray  # [2]
    label: int  # the true class of the start, CAT or DOG
    from_training: bool
    clarity: float  # grey levels, see clarity()


def attack_kinds(model: nn.Module, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which of the three kinds each attack from starts to ends [N, 2] is: 1, 2, 3 or 0."""
    was, now = true_class(starts), true_class(ends)  # [N] each
    said, says = predict(model, starts), predict(model, ends)  # [N] each
    kinds = {
        1: (was == CAT) & (now == CAT) & (says == DOG),
        2: (was == DOG) & (now == NEITHER) & (distance_to_data(ends) > FAR) & (says == CAT),
        3: (was == CAT) & (now == DOG) & (says == DOG),
    }
    out = np.zeros(len(starts), dtype=int)  # [N]
    for kind, hit in kinds.items():
        out[hit & (said == was)] = kind  # the natural image must start correctly classified
    return out


def edge_distances(model: nn.Module) -> dict[str, np.ndarray]:
    """Grey levels from every grid point to the cat edge, the dog edge and the boundary."""
    _, fine = grid(FINE)
    masks = {"cat": CAT_REGION.contains(fine), "dog": DOG_REGION.contains(fine)}
    masks["model"] = predict(model, fine) == CAT
    out = {}
    for name, mask in masks.items():
        m = mask.reshape(FINE, FINE)  # [G, G]
        inside, outside = ndimage.distance_transform_edt(m), ndimage.distance_transform_edt(~m)
        out[name] = np.maximum(inside, outside)
    return out


def lookup(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A grid field's value at the grid point nearest each point [N, 2] -> [N]."""
    i, j = np.clip(np.rint(points[:, ::-1]), 0, FINE - 1).astype(int).T  # rows follow pixel 2
    return field[i, j]


def clarity(
    dist: dict[str, np.ndarray], kind: int, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """How clearly attacks from starts to ends [N, 2] are of their kind, in grey levels [N]."""
    # The least distance from start or end to a line that decides the kind (region edges, the
    # boundary), plus a tenth of the mean, so that among equally clear attacks the roomier wins.
    own = lookup(dist["dog" if kind == 2 else "cat"], starts)  # [N]
    cat, dog = lookup(dist["cat"], ends), lookup(dist["dog"], ends)  # [N] each
    target = {1: cat, 2: np.minimum(cat, dog), 3: dog}[kind]  # [N]
    parts = np.stack([own, lookup(dist["model"], starts), target, lookup(dist["model"], ends)])
    return parts.min(axis=0) + 0.1 * parts.mean(axis=0)  # [N]


def candidates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Natural starts [N, 2] (training images, then lattice points), classes, is-training."""
    train, labels = training_set()
    cats, dogs = natural_points(CAT_REGION, LATTICE), natural_points(DOG_REGION, LATTICE)
    starts = np.concatenate([train, cats, dogs])  # [N, 2]
    classes = np.concatenate([labels, np.full(len(cats), CAT), np.full(len(dogs), DOG)])
    return starts, classes, np.arange(len(starts)) < len(train)


def run_pgd(model: nn.Module, starts: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Untargeted PGD from every start [N, 2] (grey levels), stopping early and not."""
    device = next(model.parameters()).device
    x = to_input(starts, device)  # [N, 2]
    y = torch.as_tensor(labels, dtype=torch.long, device=device)  # [N]
    eps, alpha = EPS_GREY / PIXEL_MAX, ALPHA_GREY / PIXEL_MAX
    ends = [pgd(model, x, y, eps, alpha, STEPS, early_stop=stop) for stop in (True, False)]
    return [e.double().cpu().numpy() * PIXEL_MAX for e in ends]  # [N, 2] each


def best_per_start(
    model: nn.Module,
    kind: int,
    starts: np.ndarray,
    runs: list[np.ndarray],
    dist: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clearest attack of a kind per start: start indices [K], ends [K, 2], clarities [K]."""
    # Clearest first, at most TOP of them, for the joint choice in find_attacks.
    best: dict[int, tuple[float, np.ndarray]] = {}
    for ends in runs:
        hits = np.flatnonzero(attack_kinds(model, starts, ends) == kind)
        for i, c in zip(hits, clarity(dist, kind, starts[hits], ends[hits]), strict=True):
            if i not in best or c > best[i][0]:
                best[int(i)] = (float(c), ends[i])
    if not best:
        raise RuntimeError(f"no attack of kind {kind} ({KINDS[kind]}) within the budget")
    order = sorted(best, key=lambda i: (best[i][0], -i), reverse=True)[:TOP]
    ends = np.stack([best[i][1] for i in order])  # [K, 2]
    return np.array(order), ends, np.array([best[i][0] for i in order])


def apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each pair of points from a [A, 2] and b [B, 2] is SEPARATION apart (L-inf)."""
    return np.abs(a[:, None, :] - b[None, :, :]).max(axis=2) >= SEPARATION  # [A, B]


def find_attacks(model: nn.Module) -> list[Attack]:
    """One attack of each kind (1, 2, 3), from starts SEPARATION apart, the best by rank()."""
    # Every caller gets attacks that check() has verified from the regions and the model.
    starts, labels, is_train = candidates()
    runs, dist = run_pgd(model, starts, labels), edge_distances(model)
    (i1, e1, c1), (i2, e2, c2), (i3, e3, c3) = (
        best_per_start(model, k, starts, runs, dist) for k in KINDS
    )
    ok = (
        apart(starts[i1], starts[i2])[:, :, None]
        & apart(starts[i1], starts[i3])[:, None, :]
        & apart(starts[i2], starts[i3])[None, :, :]
    )  # [K1, K2, K3]
    if not ok.any():
        raise RuntimeError(f"no attacks of the three kinds start {SEPARATION:g} apart")
    a, b, d = rank(ok, (is_train[i1], is_train[i2], is_train[i3]), (c1, c2, c3))
    picks = ((1, i1[a], e1[a], c1[a]), (2, i2[b], e2[b], c2[b]), (3, i3[d], e3[d], c3[d]))
    attacks = [
        Attack(k, starts[i], e, int(labels[i]), bool(is_train[i]), float(cl))
        for k, i, e, cl in picks
    ]
    check(model, attacks)
    return attacks


def rank(
    ok: np.ndarray, train: tuple[np.ndarray, ...], clear: tuple[np.ndarray, ...]
) -> tuple[int, int, int]:
    """The best allowed triple: most training-image starts, then least, then total clarity."""
    t1, t2, t3 = train
    n_train = t1[:, None, None] * 1 + t2[None, :, None] + t3[None, None, :]  # [K1, K2, K3]
    c1, c2, c3 = clear
    c = np.broadcast_arrays(c1[:, None, None], c2[None, :, None], c3[None, None, :])
    least, total = np.minimum.reduce(c), sum(c)  # [K1, K2, K3] each
    allowed = np.flatnonzero(ok)  # [M]
    # lexsort sorts by its last key first; the negated index makes the first of exact ties win.
    order = np.lexsort([-allowed, total.ravel()[allowed], least.ravel()[allowed],
                        n_train.ravel()[allowed]])
    a, b, d = np.unravel_index(allowed[order[-1]], ok.shape)
    return int(a), int(b), int(d)


def check(model: nn.Module, attacks: list[Attack]) -> None:
    """Raise unless each attack is of its stated kind and within the budget."""
    starts, ends = np.stack([a.start for a in attacks]), np.stack([a.end for a in attacks])
    for a, kind in zip(attacks, attack_kinds(model, starts, ends), strict=True):
        if kind != a.kind:
            raise AssertionError(f"attack {a.kind} is not {KINDS[a.kind]}")
        if np.abs(a.end - a.start).max() > EPS_GREY + 1e-3:
            raise AssertionError(f"attack {a.kind} exceeds the budget of {EPS_GREY} grey levels")
    if sorted(a.kind for a in attacks) != sorted(KINDS):
        raise AssertionError("the attacks are not one of each kind")


def adversarial_retrain(spec: MLPSpec, seed: int, attacks: list[Attack]) -> nn.Module:
    """Retrain spec from seed on the training images plus the attacked ones, original labels."""
    train, labels = training_set()
    points = np.concatenate([train, [a.end for a in attacks]])  # [9, 2]
    classes = np.concatenate([labels, [a.label for a in attacks]])  # [9]
    return fit(spec, seed, points, classes)


@cached  # attacks and adversarial_training show the same attacks: searched once
def plausible_attacks() -> list[Attack]:
    """The attacks figure's attacks: find_attacks on the plausible classifier, checked."""
    return find_attacks(find_plausible().model)


@cached
def adversarially_trained() -> nn.Module:
    """The adversarial_training model: the plausible architecture and seed, plus the attacks."""
    found = find_plausible()
    return adversarial_retrain(found.spec, found.seed, plausible_attacks())
