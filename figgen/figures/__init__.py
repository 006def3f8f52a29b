"""The figure scripts: each one makes one figure and runs on its own as a script."""
