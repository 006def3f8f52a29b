"""Decision boundaries of several classifiers, each correct on the six images."""

from matplotlib.lines import Line2D

from figgen.twopixel import plot
from figgen.twopixel.ensemble import BOUNDARY_SEEDS, all_correct, train_ensemble
from figgen.twopixel.world import training_set
from pelican_figgen.harness import Context, run

STYLES = ("-", "--")  # seed 0, seed 1


def main(ctx: Context) -> None:
    """Train every family from two seeds and draw each model's p = 0.5 contour."""
    members = train_ensemble(BOUNDARY_SEEDS)
    if not all_correct(members):
        raise AssertionError("a classifier of decision_boundaries misclassifies a training image")
    points, labels = training_set()
    fig, ax = plot.plane(size=(4.5, 5.6))  # room for the legend below
    colours = plot.family_colours()
    handles = [Line2D([], [], color="0.3", linestyle=s, label=f"seed {i}")
               for i, s in enumerate(STYLES)]
    for i, m in enumerate(members):
        family = i // BOUNDARY_SEEDS
        style = {"colors": colours[family], "linestyles": STYLES[m.seed], "linewidths": 1.4}
        plot.draw_boundary(ax, m.model, **style)
        if m.seed == 0:
            handles.append(Line2D([], [], color=colours[family], label=m.spec.label()))
    plot.draw_points(ax, points, labels, size=80)
    # Below the panel, not on it: six families at a legible size would hide the boundaries.
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=plot.FONT - 1,
               frameon=False, title="MLPs (layers x width, activation)",
               title_fontsize=plot.FONT - 1, columnspacing=1.0, handlelength=1.6)
    ctx.fields["n_models"] = len(members)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
