"""Adversarial training, the attacked images added with their original labels."""

import numpy as np

from figgen.twopixel import plot
from figgen.twopixel.adversarial import adversarially_trained, plausible_attacks
from figgen.twopixel.models import predict
from figgen.twopixel.search import find_plausible
from figgen.twopixel.world import training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Retrain the plausible model with its three attacks and draw old and new boundaries."""
    found = find_plausible()
    attacks = plausible_attacks()  # checked, as in the attacks figure
    model = adversarially_trained()
    ends = np.stack([a.end for a in attacks])  # [3, 2]
    fixed = predict(model, ends) == np.array([a.label for a in attacks])  # [3]
    points, labels = training_set()
    fig, ax = plot.plane()
    plot.draw_decision(ax, model)
    plot.draw_boundary(ax, found.model, colors="0.55", linewidths=1.0, linestyles="--")
    plot.draw_regions(ax, outline=True)
    plot.draw_points(ax, points, labels, size=80)
    plot.draw_attacks(ax, attacks, alpha=0.45)
    ctx.fields["n_fixed"] = int(fixed.sum())
    ctx.fields["n_attacks"] = len(attacks)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
