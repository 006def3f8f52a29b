"""Pelican settings for local builds (`make site`, `make serve`)."""

AUTHOR = "Aleksey Nozdryn-Plotnicki"
SITENAME = "Executable figures"
SITESUBTITLE = "Posts whose figures are computed when the site is built"
# Pages link relatively (RELATIVE_URLS), so the site works from any folder or port; feeds,
# which need absolute links, point at `make serve`'s address. publishconf.py sets the real one.
SITEURL = "http://127.0.0.1:8000"

PATH = "content"
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
DEFAULT_DATE_FORMAT = "%-d %B %Y"
THEME = "theme"

# pelican-figgen is installed with pip (the Makefile does it); tex_mathml lives in plugins/.
PLUGIN_PATHS = ["plugins"]
PLUGINS = ["pelican.plugins.figgen", "tex_mathml"]

# Figures: every key, its default and what it does: README.md, "Settings".
# The ImageNet figures use the bundled EfficientNet-Lite0; to use a torchvision model instead
# (torchvision installed, its weights downloaded once into torch's hub cache), set e.g.
#     "params": {"imagenet": {"model": "torchvision/inception_v3"}}
FIGGEN: dict = {}

# Atom feeds, in local builds too.
FEED_ALL_ATOM = "feeds/all.atom.xml"
CATEGORY_FEED_ATOM = "feeds/{slug}.atom.xml"
TRANSLATION_FEED_ATOM = None
AUTHOR_FEED_ATOM = None
AUTHOR_FEED_RSS = None

DEFAULT_PAGINATION = False
RELATIVE_URLS = True

