"""A real browser (headless Chromium) speaks the `events` subprotocol with its own WebSocket API:
it logs in (WebCrypto HMAC), subscribes, and receives the push of an instance the test launches,
acknowledges it, and receives the next one.
"""

from __future__ import annotations

import http.server
import os
import queue
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from evqtest import CHROMIUM, create_workflow, one_task, start_chromium

PAGE = Path(__file__).parent.parent / "data" / "www" / "events.html"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (make test installs "
                                       "it when run as root)")


class _Reports(http.server.BaseHTTPRequestHandler):
    """Serves the page and collects what it reports (``POST /event?k=v``)."""

    reports: queue.Queue[tuple[str, dict[str, str]]]

    def do_GET(self) -> None:  # noqa: N802 (stdlib API)
        body = PAGE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.reports.put((url.path, {k: v[0] for k, v in parse_qs(url.query).items()}))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_browser_receives_a_push(daemon):
    with daemon.client() as c:
        create_workflow(c, "quick", one_task("/bin/true"))
    reports: queue.Queue[tuple[str, dict[str, str]]] = queue.Queue()
    handler = type("Handler", (_Reports,), {"reports": reports})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="evqchrome")
    url = (f"http://127.0.0.1:{httpd.server_port}/events.html"
           f"?ws=ws://127.0.0.1:{daemon.ws_port}/")
    browser = start_chromium(profile, url)
    try:
        path, args = reports.get(timeout=30)
        assert path == "/subscribed" and args["protocol"] == "events"
        for _ in range(2):  # the page acknowledges each push, so the next one comes
            with daemon.client() as c:
                iid = c.query('<instance action="launch" name="quick" />').get(
                    "workflow-instance-id")
            assert reports.get(timeout=20) == ("/pushed", {"object-id": iid, "external-id": "5"})
    finally:
        os.killpg(browser.pid, signal.SIGKILL)  # the browser and its helper processes
        browser.wait()
        httpd.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
