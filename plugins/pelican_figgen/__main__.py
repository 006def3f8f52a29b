"""`python -m pelican_figgen`: the figure command line (list, run, clean, freeze, verify)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
