"""`python -m pelican.plugins.figgen` (also `pelican-figgen`): the figure command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
