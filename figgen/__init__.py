"""Shared code of the figure scripts: the two-pixel world, its classifiers and attacks."""
