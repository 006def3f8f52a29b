"""A real trained classifier, correct on the data and strange in empty space."""

from figgen.twopixel import plot
from figgen.twopixel.search import STRANGENESS_MEASURE, find_plausible
from figgen.twopixel.world import training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Search for the strangest qualifying classifier and draw its decision areas."""
    found = find_plausible()
    points, labels = training_set()
    fig, ax = plot.plane()
    plot.draw_decision(ax, found.model)
    plot.draw_regions(ax, outline=True)
    plot.draw_points(ax, points, labels, size=80)
    ctx.fields["islands"] = found.scores.islands
    ctx.fields["architecture"] = f"{found.spec.describe()}, seed {found.seed}"
    ctx.fields["strangeness_measure"] = (
        f"{STRANGENESS_MEASURE}: {found.scores.strangeness:.0f} grey levels, the most of "
        f"{found.n_qualified} candidates that qualified out of {found.n_candidates}"
    )
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
