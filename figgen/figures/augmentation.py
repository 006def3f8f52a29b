"""Data augmentation, brightness and contrast copies of each training image."""

from figgen.twopixel import plot
from figgen.twopixel.augment import N_COPIES, augment, augmented_model, describe
from figgen.twopixel.search import find_plausible
from figgen.twopixel.world import training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Train the plausible architecture and seed on the augmented set; draw its boundary."""
    found = find_plausible()
    points, labels = training_set()
    copies, copy_labels = augment(points, labels, N_COPIES)  # [6 * N, 2], [6 * N]
    model = augmented_model(N_COPIES)  # trained on these copies
    fig, ax = plot.plane()
    plot.draw_decision(ax, model)
    plot.draw_boundary(ax, found.model, colors="0.55", linewidths=1.0, linestyles="--")
    plot.draw_regions(ax, outline=True)
    plot.draw_points(ax, copies, copy_labels, size=10, alpha=0.6, linewidths=0)
    plot.draw_points(ax, points, labels, size=80)
    ctx.fields["n_copies"] = N_COPIES
    ctx.fields["augmentation"] = describe()
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
