"""Targeted PGD with a large budget turns a landscape into a "jigsaw puzzle"."""

from figgen.imagenet import plot
from figgen.imagenet.experiments import targeted_pgd
from pelican_figgen.harness import Context, run

__figure__ = {"gpu": True}

PHOTO = "china"
TARGET = "jigsaw puzzle"  # class 611
EPS_255, ALPHA_255, STEPS = 32, 2, 50  # every step can reach the ball's edge in 16


def main(ctx: Context) -> None:
    """Pull the photo towards the target class; draw it, its attacked copy and the change."""
    eps_255 = ctx.params.get("eps_255", EPS_255)
    out = targeted_pgd(ctx.params.get("model"), PHOTO, TARGET, eps_255, ALPHA_255, STEPS)
    fig, axes = plot.row("iii")
    narrow, column = plot.column("iii")  # the same panels stacked, for phones
    change = plot.magnified(out.attacked - out.natural, out.eps)  # [S, S, 3]
    for panels in (axes, column):
        plot.show(panels[0], out.natural, "natural: " + plot.label(out.clean))
        plot.show(panels[1], out.attacked, "attacked: " + plot.label(out.adversarial))
        plot.show(panels[2], change, f"the change, × {0.5 / out.eps:.0f}")
    ctx.fields.update(
        out.fields, steps=STEPS, alpha_255=ALPHA_255, target=TARGET, clean=str(out.clean),
        attacked=str(out.adversarial),
    )
    ctx.save(fig, narrow=narrow)


if __name__ == "__main__":
    run(main)
