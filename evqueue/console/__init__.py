"""The built-in web console: static files served by the websocket listener on plain HTTP GETs.

The page at ``/`` and its assets under ``/console/`` are plain HTML, CSS and ES modules (no
build step, nothing fetched from elsewhere); the browser then talks to the daemon over the
same port with the ``api`` and ``events`` subprotocols, like the original's React front-end.
Only the files shipped in ``static/`` can be served (no path is ever joined to a directory),
and they are read once, so a request never touches the disk.
"""

from __future__ import annotations

import email.utils
import functools
from importlib import resources

from websockets.datastructures import Headers
from websockets.http11 import Response

ASSET_PREFIX = "/console/"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: the page may only load its own files and open websockets (to this daemon: the page builds
#: the URL from its own location)
_SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
     "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)


@functools.cache
def _files() -> dict[str, tuple[bytes, str]]:
    """URL path → (body, content type) for every shipped file."""
    static = resources.files(__package__).joinpath("static")
    files = {}
    for entry in static.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            files[ASSET_PREFIX + entry.name] = (entry.read_bytes(), _TYPES[suffix])
    files["/"] = files.pop(ASSET_PREFIX + "index.html")
    return files


def response(path: str) -> Response | None:
    """The HTTP response for a GET of ``path`` (query string ignored), or None when the
    console has no such file."""
    found = _files().get(path.partition("?")[0])
    if found is None:
        return None
    body, content_type = found
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),  # websockets closes after any non-upgrade response
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        *_SECURITY_HEADERS,
    ])
    return Response(200, "OK", headers, body)
