"""Open a Snakemake report in headless Chromium and look at what a user would see.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ended by NUL on file descriptors 3 and 4), so no Python package beyond the standard library and
Pillow is needed. The report is a single page whose results open in an iframe from a `data:`
URL; `show_result` does what the report's own result buttons do (`app.setView`), then the page
inside the iframe is inspected: every image's decoded size, and the screenshot's pixels there.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Flags that work as root in a container, with no network, sync or first-run side trips.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
)
VIEWPORT = (1400, 1000)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class RenderedResult:
    """What one result looked like in the browser."""

    path: str
    frame_url: str  # the iframe's URL as Chromium has it (empty: the iframe never navigated)
    images: list[dict[str, Any]]  # per <img>: complete, naturalWidth, naturalHeight, alt
    coloured_fraction: float  # of the iframe's on-screen area, pixels that are not near-white

    @property
    def all_images_decoded(self) -> bool:
        return bool(self.images) and all(
            image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0
            for image in self.images
        )


class Browser:
    """One headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        chromium = find_chromium()
        if chromium is None:
            raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="report-browser-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: its fd 3 reads commands, fd 4 writes replies
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self._process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime"):
            self.call(f"{domain}.enable", session=True)
        width, height = VIEWPORT
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    # --- protocol ---------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self._process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str, context_id: int | None = None) -> Any:
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if context_id is not None:
            params["contextId"] = context_id
        result = self.call("Runtime.evaluate", session=True, **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    # --- pages ------------------------------------------------------------------------------
    def open(self, path: str | os.PathLike[str]) -> None:
        self.call("Page.navigate", session=True, url=Path(path).resolve().as_uri())
        self.wait_until("document.readyState === 'complete'", "the page to load")

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def child_frame(self) -> tuple[str, str] | None:
        tree = self.call("Page.getFrameTree", session=True)["frameTree"]
        children = tree.get("childFrames") or []
        if not children:
            return None
        frame = children[0]["frame"]
        return frame["id"], frame.get("url", "")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode())
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def report_results(browser: Browser, suffix: str) -> list[str]:
    """The report's result paths that end with `suffix` (from its `results` table)."""
    return sorted(
        browser.evaluate(f"Object.keys(results).filter(p => p.endsWith({json.dumps(suffix)}))")
    )


def _coloured_fraction(screenshot: np.ndarray, rect: dict[str, float]) -> float:
    top, left = max(0, int(rect["top"])), max(0, int(rect["left"]))
    bottom = min(screenshot.shape[0], int(rect["top"] + rect["height"]))
    right = min(screenshot.shape[1], int(rect["left"] + rect["width"]))
    region = screenshot[top:bottom, left:right].astype(int)
    if region.size == 0:
        return 0.0
    return float(np.mean(region.min(axis=-1) < 230))


def show_result(browser: Browser, path: str, settle_s: float = 1.0) -> RenderedResult:
    """Show one result as the report's own result button does, and look at the iframe."""
    key = json.dumps(path)
    browser.evaluate(
        f"app.setView({{content: 'html', contentPath: results[{key}].data_uri, resultPath: {key}}})"
    )
    browser.wait_until("document.querySelector('iframe') !== null", "the result's iframe")
    deadline = time.monotonic() + browser.timeout_s
    images: list[dict[str, Any]] = []
    frame_url = ""
    while time.monotonic() < deadline:
        found = browser.child_frame()
        if found is not None:
            frame_id, frame_url = found
            if frame_url.startswith("data:"):
                world = browser.call(
                    "Page.createIsolatedWorld", session=True, frameId=frame_id, worldName="check"
                )["executionContextId"]
                state = browser.evaluate(
                    "({ready: document.readyState, images: [...document.images].map(i => ({"
                    "alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, "
                    "naturalHeight: i.naturalHeight}))})",
                    context_id=world,
                )
                images = state["images"]
                if state["ready"] == "complete" and all(i["complete"] for i in images):
                    break
        time.sleep(0.2)
    time.sleep(settle_s)  # let the first animation frame paint before the screenshot
    rect = browser.evaluate(
        "(() => { const r = document.querySelector('iframe').getBoundingClientRect();"
        " return {top: r.top, left: r.left, width: r.width, height: r.height}; })()"
    )
    return RenderedResult(
        path=path,
        frame_url=frame_url[:60],
        images=images,
        coloured_fraction=_coloured_fraction(browser.screenshot(), rect),
    )
