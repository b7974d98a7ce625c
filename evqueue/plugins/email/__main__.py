"""``python -m evqueue.plugins.email > email.zip``: the plugin zip on stdout."""

import sys

from evqueue.plugins.email import plugin_zip

sys.stdout.buffer.write(plugin_zip())
