"""A headless Chromium page driven over the DevTools protocol with the ``websockets`` library
(no Playwright, no browser download): navigate, evaluate, click, type, wait, screenshot.

Actions go through the DOM the way a user's do (``click()``, setting a field's value and firing
``input``), and every uncaught page error or ``console.error`` is collected, so a test can
assert the console ran cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from evqtest import start_chromium
from websockets.sync.client import ClientConnection, connect


class PageError(AssertionError):
    pass


class Page:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="evqcdp")
        self.browser = start_chromium(self.profile)
        self.errors: list[str] = []
        self._id = 0
        self._stack = contextlib.ExitStack()
        self.ws = self._connect()
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _connect(self, timeout: float = 20) -> ClientConnection:
        deadline = time.monotonic() + timeout
        port_file = Path(self.profile) / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if port_file.exists() and (lines := port_file.read_text().split()):
                with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list") as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return self._stack.enter_context(
                        connect(pages[0]["webSocketDebuggerUrl"], max_size=None))
            time.sleep(0.05)
        raise PageError("Chromium did not open its DevTools port")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events read meanwhile are checked for page errors."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise PageError(f"{method}: {msg['error']}")
                return msg["result"]
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        params = msg.get("params", {})
        if msg.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description")
                               or details.get("text", ""))
        elif msg.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description")))
                                        for a in params["args"]))

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        r = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise PageError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 15) -> Any:
        """Polls ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise PageError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def click(self, selector: str, timeout: float = 15) -> None:
        """Waits for an enabled element matching ``selector`` and clicks it."""
        sel = json.dumps(selector)
        self.wait(f"(e => !!e && !e.disabled)(document.querySelector({sel}))", timeout)
        self.eval(f"document.querySelector({sel}).click()")

    def fill(self, selector: str, value: str) -> None:
        sel, val = json.dumps(selector), json.dumps(value)
        self.wait(f"!!document.querySelector({sel})")
        self.eval(f"(e => {{ e.focus(); e.value = {val};"
                  f" e.dispatchEvent(new Event('input', {{bubbles: true}})); }})"
                  f"(document.querySelector({sel}))")

    def text(self, selector: str) -> str:
        return self.wait(f"document.querySelector({json.dumps(selector)})?.textContent")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        self._stack.close()
        os.killpg(self.browser.pid, signal.SIGKILL)  # the browser and its helper processes
        self.browser.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
