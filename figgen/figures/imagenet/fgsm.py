"""One FGSM step with a budget large enough that its noise is plain to see."""

from figgen.imagenet import plot
from figgen.imagenet.experiments import fgsm_step
from pelican_figgen.harness import Context, run

__figure__ = {"gpu": True}

PHOTO = "flower"
EPS_255 = 16  # grey levels: the pattern shows, the flower stays a flower


def main(ctx: Context) -> None:
    """Attack the photo with one FGSM step; draw the natural and the attacked image."""
    out = fgsm_step(ctx.params.get("model"), PHOTO, ctx.params.get("eps_255", EPS_255))
    fig, axes = plot.row("ii", panel=3.4)  # two panels: wider, the noise is the point
    narrow, column = plot.column("ii")  # the same panels stacked, for phones
    for panels in (axes, column):
        plot.show(panels[0], out.natural, "natural: " + plot.label(out.clean))
        plot.show(panels[1], out.attacked, "attacked: " + plot.label(out.adversarial))
    ctx.fields.update(out.fields, clean=str(out.clean), attacked=str(out.adversarial))
    ctx.save(fig, narrow=narrow)


if __name__ == "__main__":
    run(main)
