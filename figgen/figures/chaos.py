"""Where trained models disagree, as the share of an ensemble that says cat."""

from figgen.twopixel import explore, plot
from figgen.twopixel.ensemble import all_correct, cat_votes, disagreement, train_ensemble
from figgen.twopixel.world import FAR, far_mask, grid, training_set
from pelican_figgen.harness import Context, run


def main(ctx: Context) -> None:
    """Train the whole ensemble, map the share of its models that say cat, measure dissent."""
    members = train_ensemble()
    if not all_correct(members):
        raise AssertionError("a model of the ensemble misclassifies a training image")
    votes = cat_votes(members, plot.GRID)  # [G, G]
    far = far_mask(plot.GRID)  # [G, G]
    axis, _ = grid(plot.GRID)
    points, labels = training_set()
    fig, ax = plot.plane(size=(5.4, 4.5))
    mesh = ax.pcolormesh(axis, axis, votes, cmap=plot.cat_dog_cmap(), vmin=0, vmax=1,
                         shading="nearest", rasterized=True)
    disputed = ((votes > 0) & (votes < 1)).astype(float)  # [G, G]: not unanimous
    ax.contourf(axis, axis, disputed, levels=[0.5, 1.5], colors="none", hatches=["...."])
    ax.contour(axis, axis, far, levels=[0.5], colors="0.3", linewidths=1.0, linestyles="--")
    plot.draw_points(ax, points, labels, size=80, edgecolors="black")
    bar = fig.colorbar(mesh, ax=ax, shrink=0.8)
    bar.set_label("share of models that say cat", fontsize=plot.FONT)
    ctx.fields["n_models"] = len(members)
    ctx.fields["far"] = f"{FAR:g}"
    ctx.fields["chaos_far_pct"] = f"{100 * disagreement(votes, far):.0f}%"
    ctx.fields["chaos_near_pct"] = f"{100 * disagreement(votes, ~far):.0f}%"
    # The page's probe reads the same votes (the 72 models themselves would be 600 KB).
    data = {"votes": explore.votes_data(votes, len(members)), "regions": explore.regions_data(),
            "start": [float(v) for v in points[0]]}
    ctx.save_interactive(fig, data=data, module=explore.MODULE, ax=ax)


if __name__ == "__main__":
    run(main)
