"""An image of two grey pixels is a point in the plane."""

from matplotlib.patches import Rectangle

from figgen.twopixel import plot
from figgen.twopixel.world import CAT, training_set
from pelican_figgen import dark
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Draw the empty plane and one image, with its two pixels shown as grey squares."""
    points, _ = training_set()
    p1, p2 = (int(v) for v in points[1])  # a training cat: the point training_data shows again
    fig, ax = plot.plane()
    ax.plot([p1, p1, 0], [0, p2, p2], ls=":", lw=1, color="0.4")
    ax.scatter([p1], [p2], s=70, c=plot.COLOURS[CAT], edgecolors="black", zorder=5)
    ax.annotate(f"({p1}, {p2})", (p1, p2), xytext=(8, 8), textcoords="offset points",
                fontsize=plot.FONT)
    # The image itself, 2 x 1 grey pixels, drawn as two squares beside its point.
    inset = ax.inset_axes((0.62, 0.08, 0.32, 0.16))
    for i, value in enumerate((p1, p2)):
        grey = str(value / 255)
        # Its grey is the pixel's value: the dark render keeps it (and its outline).
        dark.keep(inset.add_patch(Rectangle((i, 0), 1, 1, fc=grey, ec="black", lw=0.8)))
        inset.text(i + 0.5, -0.25, f"pixel {i + 1}", ha="center", va="top", fontsize=plot.FONT - 1)
    inset.set_xlim(-0.05, 2.05)
    inset.set_ylim(-0.6, 1.05)
    inset.set_axis_off()
    ctx.fields.update(example_p1=p1, example_p2=p2)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
