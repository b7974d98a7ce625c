"""The built-in e-mail notification plugin; ``python -m evqueue.plugins.email > email.zip``
writes it in the plugin zip format that ``notification_type register`` installs."""

from __future__ import annotations

import io
import os
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def plugin_zip() -> bytes:
    """manifest.xml and the executable, as the original's plugin zips are laid out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(os.path.join(HERE, "manifest.xml"), "manifest.xml")
        info = zipfile.ZipInfo("notify_email.py")
        info.external_attr = 0o755 << 16
        with open(os.path.join(HERE, "notify_email.py"), "rb") as f:
            z.writestr(info, f.read())
    return buf.getvalue()
