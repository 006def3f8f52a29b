"""The made-up true regions of cats and dogs; everything else is neither."""

from figgen.twopixel import plot
from figgen.twopixel.world import CAT, CLASS_NAMES, DOG, REGIONS, training_set, true_class
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Shade the true regions and draw the training images inside them."""
    points, labels = training_set()
    if (true_class(points) != labels).any():
        raise AssertionError("a training image lies outside its true region")
    fig, ax = plot.plane()
    plot.draw_regions(ax)
    plot.draw_points(ax, points, labels, size=80)
    for c in (CAT, DOG):
        x, y = REGIONS[c].center
        ax.text(x, y + (44 if c == CAT else -50), f"true {CLASS_NAMES[c]}s", ha="center",
                color=plot.COLOURS[c], fontsize=plot.FONT + 1, weight="bold")
    ax.text(225, 230, "neither", ha="center", color="0.35", fontsize=plot.FONT + 1, style="italic")
    ax.text(35, 25, "neither", ha="center", color="0.35", fontsize=plot.FONT + 1, style="italic")
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
