"""Figure 12: targeted PGD with a large budget turns a landscape into a "jigsaw puzzle"."""

from functools import partial

import torch

from figgen.attacks import pgd
from figgen.harness import Context, run
from figgen.imagenet import models, plot
from figgen.imagenet.classes import class_index
from figgen.imagenet.scene import scene

PHOTO = "china"
TARGET = "jigsaw puzzle"  # class 611
EPS_255, ALPHA_255, STEPS = 32, 2, 50  # every step can reach the ball's edge in 16


def main(ctx: Context) -> None:
    """Pull the photo towards the target class; draw it, its attacked copy and the change."""
    setting = scene(ctx.params, PHOTO, EPS_255)
    model, x, eps = setting.model, setting.image, setting.eps  # x: [1, 3, S, S]
    target = torch.tensor([class_index(TARGET)], device=x.device)  # [1]
    steps = partial(ctx.progress, description=f"PGD towards {TARGET}")  # a bar while it runs
    adv = pgd(model, x, target, eps, ALPHA_255 / 255, STEPS, targeted=True, progress=steps)
    clean, attacked = models.classify(model, torch.cat([x, adv]))  # [2] images at once
    if attacked.label != target.item():
        raise RuntimeError(f"PGD did not reach {TARGET!r} ({attacked} instead): raise eps_255")
    fig, axes = plot.row("iii")
    plot.show(axes[0], x, "natural: " + plot.label(clean))
    plot.show(axes[1], adv, "attacked: " + plot.label(attacked))
    plot.show(axes[2], plot.magnified(adv - x, eps), f"the change, × {0.5 / eps:.0f}")
    ctx.fields.update(
        setting.fields(), steps=STEPS, alpha_255=ALPHA_255, target=TARGET, clean=str(clean),
        attacked=str(attacked),
    )
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
