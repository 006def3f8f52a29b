"""The opening example, natural + eps * sign(gradient) = adversarial (FGSM)."""

from figgen.imagenet import plot
from figgen.imagenet.experiments import fgsm_step
from pelican_figgen.harness import Context, run

__figure__ = {"gpu": True}

PHOTO = "coffee"
EPS_255 = 4  # the budget in grey levels: 4/255 ~ 0.016, invisible on a screen


def main(ctx: Context) -> None:
    """Attack the photo with one FGSM step and draw the three terms of the sum."""
    out = fgsm_step(ctx.params.get("model"), PHOTO, ctx.params.get("eps_255", EPS_255))
    noisy = out.seen_sign
    fig, axes = plot.row("ioioi")
    narrow, column = plot.column("ioioi")  # the same panels stacked, for phones
    for panels in (axes, column):
        plot.show(panels[0], out.natural, plot.label(out.clean))
        plot.operator(panels[1], f"+ {out.eps:.3f} ×")
        plot.show(panels[2], out.sign, f"sign(∇ loss)\n{noisy.name}, {noisy.confidence:.1%}")
        plot.operator(panels[3], "=")
        plot.show(panels[4], out.attacked, plot.label(out.adversarial))
    ctx.fields.update(
        out.fields, eps=f"{out.eps:.3f}", clean=str(out.clean), noise=str(noisy),
        attacked=str(out.adversarial),
    )
    ctx.save(fig, narrow=narrow)


if __name__ == "__main__":
    run(main)
