"""The two-pixel cat/dog world of the plane figures: true regions, training set, models, plots."""
