"""Figure 4: decision boundaries of several classifiers, each correct on the six images."""

from matplotlib.lines import Line2D

from figgen.harness import Context, run
from figgen.twopixel import plot
from figgen.twopixel.ensemble import BOUNDARY_SEEDS, all_correct, train_ensemble
from figgen.twopixel.world import training_set

STYLES = ("-", "--")  # seed 0, seed 1


def main(ctx: Context) -> None:
    """Train every family from two seeds and draw each model's p = 0.5 contour."""
    members = train_ensemble(BOUNDARY_SEEDS)
    if not all_correct(members):
        raise AssertionError("a classifier of figure 4 misclassifies a training image")
    points, labels = training_set()
    fig, ax = plot.plane()
    colours = plot.family_colours()
    handles = []
    for i, m in enumerate(members):
        family = i // BOUNDARY_SEEDS
        style = {"colors": colours[family], "linestyles": STYLES[m.seed], "linewidths": 1.4}
        plot.draw_boundary(ax, m.model, **style)
        if m.seed == 0:
            handles.append(Line2D([], [], color=colours[family], label=m.spec.describe()))
    plot.draw_points(ax, points, labels, size=80)
    ax.legend(handles=handles, loc="lower right", fontsize=plot.FONT - 3, framealpha=0.9)
    ctx.fields["n_models"] = len(members)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
