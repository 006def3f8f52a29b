"""The six training images, three cats and three dogs, as points."""

from figgen.twopixel import plot
from figgen.twopixel.world import CAT, DOG, training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Draw the training set in the plane."""
    points, labels = training_set()
    fig, ax = plot.plane()
    plot.draw_points(ax, points, labels, size=80)
    ax.legend(handles=plot.point_handles(), loc="lower right", fontsize=plot.FONT - 1)
    ctx.fields.update(n_cats=int((labels == CAT).sum()), n_dogs=int((labels == DOG).sum()))
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
