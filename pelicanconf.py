"""Pelican settings for local builds (`make site`, `make serve`)."""

AUTHOR = "Aleksey Nozdryn-Plotnicki"
SITENAME = "Executable figures"
SITESUBTITLE = "Posts whose figures are computed when the site is built"
SITEURL = ""

PATH = "content"
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
DEFAULT_DATE_FORMAT = "%-d %B %Y"
THEME = "theme"

PLUGIN_PATHS = ["plugins"]
PLUGINS = ["pelican_figgen", "tex_mathml"]

# Figures: every key and its default is documented in plugins/pelican_figgen/settings.py.
# The ImageNet figures use the bundled EfficientNet-Lite0; to use a torchvision model instead
# (torchvision installed, its weights downloaded once into torch's hub cache), set e.g.
#     "params": {"imagenet": {"model": "torchvision/inception_v3"}}
FIGGEN: dict = {}

# Feeds are written by publishconf.py only; local previews do not need them.
FEED_ALL_ATOM = None
CATEGORY_FEED_ATOM = None
TRANSLATION_FEED_ATOM = None
AUTHOR_FEED_ATOM = None
AUTHOR_FEED_RSS = None

DEFAULT_PAGINATION = False
RELATIVE_URLS = True
