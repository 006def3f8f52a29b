"""Given an image, the class probabilities: the model's five most probable classes for a photo."""

from figgen.imagenet import plot
from figgen.imagenet.experiments import top_classes
from pelican_figgen.harness import Context, run

__figure__ = {"gpu": True}

PHOTO = "chelsea"  # a cat: the model spreads its belief over several cat classes
TOP = 5  # bars drawn


def main(ctx: Context) -> None:
    """Classify the photo; draw it beside its top classes as labelled horizontal bars."""
    out = top_classes(ctx.params.get("model"), PHOTO, TOP)
    size, classes = out.fields["size"], out.fields["classes"]
    fig, photo, chart = plot.photo_and_bars()
    narrow, *narrow_panels = plot.photo_over_bars()  # the photo above its bars, for phones
    for image, bars, space in ((photo, chart, " "), (*narrow_panels, "\n")):  # narrow: 2 lines
        plot.show(image, out.photo, f"{size} × {size} pixels")
        plot.bars(bars, out.names, out.probabilities)
        label = f"probability{space}(the top {TOP} of {classes:,} classes)"
        bars.set_xlabel(label, fontsize=plot.FONT)
    ctx.fields.update(
        out.fields, top=str(out.names[0]), p_top=float(out.probabilities[0]),
        p_shown=float(out.probabilities.sum()),
    )
    ctx.save(fig, narrow=narrow)


if __name__ == "__main__":
    run(main)
