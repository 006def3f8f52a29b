"""Three gradient attacks on the plausible classifier, one of each kind."""

from figgen.twopixel import explore, plot
from figgen.twopixel.adversarial import ALPHA_GREY, ATTACK_NAME, EPS_GREY, STEPS, plausible_attacks
from figgen.twopixel.search import find_plausible
from figgen.twopixel.world import training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Attack the figure-6 model, check each attack's kind, and draw the three arrows."""
    found = find_plausible()
    model = found.model
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
    # The page's probe: the same model, regions and attack settings, evaluated in the browser.
    data = {"model": explore.model_data(model, found.spec.activation),
            "regions": explore.regions_data(), "eps_grey": EPS_GREY, "alpha_grey": ALPHA_GREY,
            "steps": STEPS, "start": [float(v) for v in attacks[0].start],
            "attacks": [{"kind": a.kind, "start": a.start.tolist(), "end": a.end.tolist()}
                        for a in attacks]}
    ctx.save_interactive(fig, data=data, module=explore.MODULE, ax=ax)


if __name__ == "__main__":
    run(main)
