"""The figure scripts' side of pelican-figgen: the harness a script runs under, cached
intermediates, and the helpers the build starts (warm server, supervisor, import reader).

A figure script imports `pelican_figgen.harness` (``run``, ``Context``) and, for slow work
shared by figures, `pelican_figgen.intermediates.cached`. Nothing here imports Pelican.
"""
