"""The two-pixel cat/dog world of figures 1-9: true regions, training set, models, plots."""
