"""Browser test of the built book: ``python data_scripts/check_book.py build/book/html [--screenshots DIR]``.

Serves the book on 127.0.0.1 (a local ``http.server``), opens it in Debian's ``chromium`` headless and drives it
over the DevTools protocol (``websocket-client``). For every HTML page of the book it checks that

- the page loads (HTTP 200) and throws no JavaScript exception;
- every image on it has loaded (``complete`` with a natural width > 0);
- every internal link resolves: its file exists in the book and its ``#anchor``, if any, is an element id there;
- every formula Sphinx marked as math was typeset by MathJax (no raw TeX left, no MathJax error);
- nothing was requested from outside 127.0.0.1 (the book works offline: MathJax is its own copy);

and it saves screenshots of two pages (the paper at its Eq. (1), a chapter at its first figure) as small PNGs.
Exit status 1 with a list of every failure; 0 when all pass.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_STATE = """(() => {
  // Sphinx's math elements (MathJax's own output also uses class "math", inside .MathJax: not counted)
  const math = Array.from(document.querySelectorAll('span.math, div.math'))
    .filter(e => !e.parentElement.closest('.MathJax, .MathJax_Display, .MathJax_Preview'));
  // typeset: MathJax's output is there and its preview (the raw TeX shown meanwhile) has been cleared
  const typeset = math.filter(e => e.querySelector('.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_CHTML')
    && !Array.from(e.querySelectorAll('.MathJax_Preview')).some(p => p.textContent.trim()));
  return {
    ready: document.readyState,
    math: math.length,
    typeset: typeset.length,
    mathErrors: document.querySelectorAll('.MathJax_Error, .merror, .noError').length,
    rawTex: math.filter(e => !typeset.includes(e)).map(e => e.textContent.slice(0, 60)),
    images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  };
})()"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # no request log on stderr
        pass


class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


class DevTools:
    """A minimal DevTools-protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client (the `book` extra)

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            self.ws.settimeout(max(0.1, end - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expr: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return res.get("result", {}).get("value")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(
        "chromium is not installed. Fix: apt-get install chromium (make book-check does it as root)."
    )


def start_chromium(binary: str, profile_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start headless chromium with a DevTools port; return the process and the first page's websocket URL."""
    args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--remote-debugging-port=0", f"--user-data-dir={profile_dir}", "--window-size=1200,900",
            "about:blank"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile_dir / "DevToolsActivePort"
    end = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise SystemExit(
                f"{binary} did not start (exit {proc.returncode}); try it by hand with --headless"
            )
        time.sleep(0.2)
    port = port_file.read_text().split()[0]
    for _ in range(50):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if pages:
            return proc, pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise SystemExit("chromium has no page target")


def book_pages(root: Path) -> list[str]:
    """Every HTML page of the book (relative paths), static assets left out."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if not p.relative_to(root).as_posix().startswith(("_static/", "_sources/", "_images/"))
    )


class Checker:
    """Visits pages and collects failures."""

    def __init__(self, root: Path, base: str, dt: DevTools) -> None:
        self.root, self.base, self.dt = root, base, dt
        self.failures: list[str] = []
        self.ids: dict[Path, set[str]] = {}
        self.counts = {"pages": 0, "images": 0, "links": 0, "math": 0}

    def _ids(self, path: Path) -> set[str]:
        if path not in self.ids:
            parser = _Ids()
            parser.feed(path.read_text(errors="replace"))
            self.ids[path] = parser.ids
        return self.ids[path]

    def open(self, page: str, timeout: float = 120) -> dict[str, Any]:
        """Navigate to a page, wait for its load and for MathJax; return the page state."""
        self.dt.events.clear()
        nav = self.dt.call("Page.navigate", url=self.base + page)
        if nav.get("errorText"):
            self.failures.append(f"{page}: navigation failed: {nav['errorText']}")
        self.dt.wait_event("Page.loadEventFired", timeout)
        end = time.monotonic() + timeout
        state = self.dt.evaluate(_STATE)
        while state["typeset"] < state["math"] and time.monotonic() < end:
            time.sleep(0.25)
            state = self.dt.evaluate(_STATE)
        images_by = min(end, time.monotonic() + 10)  # images get 10 s more after the math
        while not all(i["ok"] for i in state["images"]) and time.monotonic() < images_by:
            time.sleep(0.25)
            state = self.dt.evaluate(_STATE)
        return state

    def check(self, page: str) -> None:
        state = self.open(page)
        self.counts["pages"] += 1
        for ev in self.dt.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith((self.base, "data:", "about:", "blob:")):
                    self.failures.append(f"{page}: requests {url} from outside the book")
            elif method == "Network.responseReceived":
                resp = params["response"]
                if (
                    resp["url"].startswith(self.base)
                    and resp.get("status", 200) >= 400
                    and not resp["url"].endswith("/favicon.ico")
                ):  # the browser asks for one on its own; the book has none
                    self.failures.append(f"{page}: {resp['url']} answered HTTP {resp['status']}")
            elif method == "Runtime.exceptionThrown":
                desc = params["exceptionDetails"].get("exception", {}).get("description", "")
                self.failures.append(
                    f"{page}: JavaScript exception {desc.splitlines()[0] if desc else params}"
                )
        for img in state["images"]:
            self.counts["images"] += 1
            if not img["ok"]:
                self.failures.append(f"{page}: image did not load: {img['src']}")
        self.counts["math"] += state["math"]
        if state["typeset"] < state["math"]:
            self.failures.append(
                f"{page}: {state['math'] - state['typeset']} formulas not typeset: {state['rawTex'][:3]}"
            )
        if state["mathErrors"]:
            self.failures.append(f"{page}: {state['mathErrors']} MathJax errors")
        for href in state["links"]:
            if not href.startswith(self.base):
                continue
            self.counts["links"] += 1
            parts = urllib.parse.urlsplit(href)
            rel = urllib.parse.unquote(parts.path)[len(urllib.parse.urlsplit(self.base).path) :]
            target = self.root / rel
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                self.failures.append(f"{page}: broken link {href}")
            elif parts.fragment and target.suffix == ".html":
                if urllib.parse.unquote(parts.fragment) not in self._ids(target):
                    self.failures.append(f"{page}: link to a missing anchor {href}")

    def screenshot(self, page: str, dest: Path, selector: str) -> None:
        """Save a 1200×900 screenshot of ``page`` scrolled to the first element matching ``selector``."""
        self.open(page)
        self.dt.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (e) e.scrollIntoView(); }})()"
        )
        time.sleep(0.5)
        data = self.dt.call("Page.captureScreenshot", format="png")["data"]
        import base64

        from PIL import Image

        img = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        img = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        img.save(dest, format="PNG", optimize=True)


def _chapter_with_figure(root: Path, pages: list[str]) -> str | None:
    for p in pages:
        if "/notebooks/0" in p and "<img" in (root / p).read_text(errors="replace"):
            if "04_" in p:
                return p
    return next((p for p in pages if "/notebooks/0" in p and "<img" in (root / p).read_text()), None)


def run(root: Path, screenshots: Path | None) -> int:
    root = root.resolve()
    if not (root / "index.html").is_file():
        raise SystemExit(f"{root}: no index.html. Fix: make book first.")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = book_pages(root)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qparse-chromium-") as tmp:
        proc, ws_url = start_chromium(find_chromium(), Path(tmp))
        try:
            dt = DevTools(ws_url)
            for domain in ("Page", "Network", "Runtime"):
                dt.call(f"{domain}.enable")
            dt.call(
                "Emulation.setDeviceMetricsOverride",
                width=1200,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            checker = Checker(root, base, dt)
            for page in pages:
                checker.check(page)
            if screenshots is not None:
                checker.screenshot("docs/paper.html", screenshots / "paper.png", "#the-loss-eq-1")
                chapter = _chapter_with_figure(root, pages)
                if chapter:
                    checker.screenshot(chapter, screenshots / "chapter.png", ".cell_output img")
                else:
                    checker.failures.append("no chapter with a figure to photograph")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            server.shutdown()
    c = checker.counts
    print(f"browser test: {c['pages']} pages, {c['images']} images, {c['links']} internal links, "
          f"{c['math']} formulas checked in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    if screenshots is not None:
        for p in sorted(screenshots.glob("*.png")):
            print(f"screenshot: {p} ({p.stat().st_size / 1024:.0f} KiB)")
    if checker.failures:
        print(f"{len(checker.failures)} failures:", *checker.failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, nargs="?", default=Path("build/book/html"))
    ap.add_argument("--screenshots", type=Path, default=None, help="save paper.png and chapter.png here")
    args = ap.parse_args(argv)
    os.environ.setdefault("NO_AT_BRIDGE", "1")
    return run(args.html, args.screenshots)


if __name__ == "__main__":
    sys.exit(main())
