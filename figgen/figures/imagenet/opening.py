"""Figure 10: the opening example, natural + eps * sign(gradient) = adversarial (FGSM)."""

import torch

from figgen.attacks import fgsm, input_gradient
from figgen.harness import Context, run
from figgen.imagenet import models, plot
from figgen.imagenet.scene import scene

PHOTO = "coffee"
EPS_255 = 4  # the budget in grey levels: 4/255 ~ 0.016, invisible on a screen


def main(ctx: Context) -> None:
    """Attack the photo with one FGSM step and draw the three terms of the sum."""
    setting = scene(ctx.params, PHOTO, EPS_255)
    model, x, eps = setting.model, setting.image, setting.eps  # x: [1, 3, S, S]
    clean = models.classify(model, x)[0]
    true = torch.tensor([clean.label], device=x.device)  # [1] the model's own class
    grad, _ = input_gradient(model, x, true)  # [1, 3, S, S]
    noise = (grad.sign() + 1) / 2  # [1, 3, S, S] the sign as an image: 0, 0.5 or 1
    adv = fgsm(model, x, true, eps)  # [1, 3, S, S]
    noisy, attacked = models.classify(model, torch.cat([noise, adv]))  # [2] images at once
    if attacked.label == clean.label:
        raise RuntimeError(f"FGSM at {eps:.4f} left the class at {clean}: raise eps_255")
    fig, axes = plot.row("ioioi")
    plot.show(axes[0], x, plot.label(clean))
    plot.operator(axes[1], f"+ {eps:.3f} ×")
    plot.show(axes[2], noise, f"sign(∇ loss)\n{noisy.name}, {noisy.confidence:.1%}")
    plot.operator(axes[3], "=")
    plot.show(axes[4], adv, plot.label(attacked))
    ctx.fields.update(
        setting.fields(), eps=f"{eps:.3f}", clean=str(clean), noise=str(noisy),
        attacked=str(attacked),
    )
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
