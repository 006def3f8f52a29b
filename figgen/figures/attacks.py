"""Three gradient attacks on the plausible classifier, one of each kind."""

from figgen.twopixel import plot
from figgen.twopixel.adversarial import ATTACK_NAME, EPS_GREY, plausible_attacks
from figgen.twopixel.search import find_plausible
from figgen.twopixel.world import training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Attack the figure-6 model, check each attack's kind, and draw the three arrows."""
    model = find_plausible().model
    attacks = plausible_attacks()  # checked: one of each kind, within budget, or it raises
    points, labels = training_set()
    fig, ax = plot.plane()
    plot.draw_decision(ax, model)
    plot.draw_regions(ax, outline=True)
    plot.draw_points(ax, points, labels, size=80)
    plot.draw_attacks(ax, attacks)
    ctx.fields.update(attack=ATTACK_NAME, eps_pixels=EPS_GREY)
    n = sum(a.from_training for a in attacks)
    ctx.fields["n_from_training"] = n
    ctx.fields["starts"] = ("none is a training image", "one is a training image",
                            "two are training images", "all three are training images")[n]
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
