"""Pelican plugin: figures computed at build time by figure scripts, cached by content hash.

In Markdown, a paragraph `![alt text]({figure}name "caption")` (in reStructuredText, the directive
`.. figgen:: name` with `:alt:` and `:caption:`) runs `<scripts>/name.py` when its inputs changed
and embeds the result as a <figure>. Settings: the FIGGEN dict (see settings.py).
"""

import logging

from pelican import signals

from .embed import add_srcset, add_srcset_to_feed
from .pipeline import add_markdown_extension, build_figures
from .rst_directive import register_directive


def register() -> None:
    """Connect the plugin to Pelican's signals."""
    _follow_pelican_verbosity()
    signals.initialized.connect(add_markdown_extension)
    signals.initialized.connect(register_directive)
    signals.all_generators_finalized.connect(build_figures)
    signals.content_written.connect(add_srcset)
    signals.feed_generated.connect(add_srcset_to_feed)


def _follow_pelican_verbosity() -> None:
    """Show one line per figure at Pelican's default level; follow its -q and -D flags."""
    level = logging.getLogger("pelican").getEffectiveLevel()
    logging.getLogger(__name__).setLevel(logging.INFO if level == logging.WARNING else level)
