"""What every ImageNet figure starts from: the chosen model, its photo, the attack budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from figgen.imagenet import models, photos


@dataclass(frozen=True)
class Scene:
    """A figure's model, its photo as the model sees it, and the L-infinity budget."""

    model: models.Classifier
    photo: str
    image: Tensor  # [1, 3, S, S] in [0, 1], on the model's device
    eps: float

    def fields(self) -> dict[str, Any]:
        """The caption values every ImageNet figure states: model, size, credit, budget."""
        return {
            "model": self.model.name, "size": self.model.size,
            "credit": photos.credit(self.photo), "eps_255": round(self.eps * 255),
        }


def scene(model: str | None, photo: str, eps_255: float) -> Scene:
    """The model a spec names (None: the default), the photo at its size, the budget in [0, 1]."""
    classifier = models.load(model or models.DEFAULT_MODEL)
    image = photos.load_photo(photo, classifier.size).to(classifier.device)  # [1, 3, S, S]
    return Scene(classifier, photo, image, eps_255 / 255)
