"""Figure 11: one FGSM step with a budget large enough that its noise is plain to see."""

import torch

from figgen.attacks import fgsm
from figgen.harness import Context, run
from figgen.imagenet import models, plot
from figgen.imagenet.scene import scene

PHOTO = "flower"
EPS_255 = 16  # grey levels: the pattern shows, the flower stays a flower


def main(ctx: Context) -> None:
    """Attack the photo with one FGSM step; draw the natural and the attacked image."""
    setting = scene(ctx.params, PHOTO, EPS_255)
    model, x, eps = setting.model, setting.image, setting.eps  # x: [1, 3, S, S]
    clean = models.classify(model, x)[0]
    adv = fgsm(model, x, torch.tensor([clean.label], device=x.device), eps)  # [1, 3, S, S]
    attacked = models.classify(model, adv)[0]
    if attacked.label == clean.label:
        raise RuntimeError(f"FGSM at {eps:.4f} left the class at {clean}: raise eps_255")
    fig, axes = plot.row("ii", panel=3.4)  # two panels: wider, the noise is the point
    plot.show(axes[0], x, "natural: " + plot.label(clean))
    plot.show(axes[1], adv, "attacked: " + plot.label(attacked))
    ctx.fields.update(setting.fields(), clean=str(clean), attacked=str(attacked))
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
