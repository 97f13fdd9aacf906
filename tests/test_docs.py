"""The docs site (`make docs`, tools/build_docs.py): built into a temporary folder, then read by a real browser.

`test_site_is_static_and_offline` and `test_directives_and_links` need nothing but the Python environment.
`test_site_in_chromium` serves the site from 127.0.0.1 and loads every page in headless Chromium, driven
over the DevTools protocol (websocket-client): no console errors, no failed request, no request leaving
127.0.0.1, every image decoded, every local link and anchor resolving, MathJax (vendored) typesetting.
It is skipped when `chromium` is not on PATH (Debian: `apt-get install -y chromium`); SEMCLIP_CHROMIUM
may name another Chromium/Chrome binary. SEMCLIP_DOCS_SCREENSHOT=1 refreshes docs/screenshot_index.png.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urldefrag, urlsplit
from urllib.request import Request, urlopen

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "screenshot_index.png"
CHROMIUM = os.environ.get("SEMCLIP_CHROMIUM") or shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,860",
    "--remote-debugging-port=0",
]


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools" / "build_docs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_docs", mod)
    spec.loader.exec_module(mod)
    return mod


bd = _load_builder()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The real site of nbs/, built once for this module."
    return bd.build(tmp_path_factory.mktemp("docs") / "site", quiet=True)


# ------------------------------------------------------------------------------------------- no browser
def test_site_is_static_and_offline(site):
    out = site["out"]
    stems = [p.stem for p in bd.notebooks()]
    assert stems[0] == "index" and len(stems) >= 13, stems
    assert [p["stem"] for p in site["pages"]] == stems
    for s in stems:
        assert (out / f"{s}.html").is_file(), s
    assert not site["warnings"], "\n".join(site["warnings"])
    index = (out / "index.html").read_text()
    for s in stems[1:]:
        assert f'href="{s}.html"' in index, f"index does not link {s}.html"
    for page in out.glob("*.html"):
        txt = page.read_text()
        # what the browser fetches by itself (scripts, styles, images) is local
        for tag, url in re.findall(r'<(script|link|img|iframe|source)\b[^>]*?\s(?:src|href)="([^"]*)"', txt):
            assert not re.match(r"^(https?:)?//", url), f"{page.name}: <{tag}> loads {url} from the network"
        assert 'src="vendor/mathjax/tex-chtml-full.js"' in txt and 'src="vendor/require.js"' in txt, page.name
        notebook_links = re.findall(r'<a\b[^>]*?\shref="([^"#]*\.ipynb)(?:#[^"]*)?"', txt)
        assert not notebook_links, f"{page.name}: links still point at notebooks: {notebook_links}"
        shown = re.search(r"(?m)^\s*#\s*\|.*$", re.sub(r"<[^>]+>", "", txt))
        assert not shown, f"{page.name}: an nbdev directive is shown: {shown and shown.group(0)}"
    for need in ("vendor/mathjax/tex-chtml-full.js", "vendor/require.js", "assets/jupyterlab.css", "assets/site.css"):
        assert (out / need).is_file(), need
    assert site["bytes"] < 60 * 2**20, f"the site is {site['bytes'] / 2**20:.0f} MiB"


def _nb(*cells):
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}
    )
    for kind, src, *outs in cells:
        c = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if outs:
            c.outputs = outs[0]
        nb.cells.append(c)
    return nb


def test_directives_and_links(tmp_path):
    "nbdev directives, outputs with and without widgets, links to notebooks and to local images."
    repo = tmp_path / "repo"
    nbs = repo / "nbs"
    (repo / "figures").mkdir(parents=True)
    nbs.mkdir()
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    (repo / "figures" / "dot.png").write_bytes(png)
    stream = nbformat.v4.new_output("stream", name="stdout", text="printed 42\n")
    widget = nbformat.v4.new_output(
        "display_data",
        data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0},
            "text/plain": "progress 100%",
        },
    )
    nbformat.write(
        _nb(
            (
                "md",
                (
                    "# demo\n\n> A demo page.\n\nSee [the other](00_other.ipynb#Part-two) and "
                    "![dot](../figures/dot.png) and $a^2$."
                ),
            ),
            ("code", "#| default_exp demo"),
            ("code", "#| hide\nSECRET_HIDDEN = 1"),
            ("code", "#| export\ndef shown_export(): return 1"),
            ("code", "#|echo: false\nHIDDEN_INPUT = 1", [stream]),
            (
                "code",
                "#| output: false\nVISIBLE_INPUT = 2",
                [nbformat.v4.new_output("stream", name="stdout", text="HIDDEN_OUT\n")],
            ),
            ("code", "#| include: false\nNOT_INCLUDED = 3"),
            ("code", "#| cuda\nx = 1  #| hide_line\nGPU_CELL = 4"),
            ("code", "for _ in range(3): pass", [widget]),
        ),
        nbs / "01_demo.ipynb",
    )
    nbformat.write(
        _nb(
            ("md", "# other\n\n## Part two\n\nBack to [demo](01_demo.ipynb)."),
        ),
        nbs / "00_other.ipynb",
    )
    nbformat.write(
        _nb(
            ("md", "# home\n\n> The index."),
        ),
        nbs / "index.ipynb",
    )
    res = bd.build(tmp_path / "site", nbs=nbs, quiet=True)
    assert [p["stem"] for p in res["pages"]] == ["index", "00_other", "01_demo"]
    assert res["pages"][2]["module"] == "semclip.demo" and res["pages"][2]["subtitle"] == "A demo page."
    demo = (tmp_path / "site" / "01_demo.html").read_text()
    text = re.sub(r"<[^>]+>", "", demo)
    assert 'href="00_other.html#Part-two"' in demo and 'src="figures/dot.png"' in demo
    assert (tmp_path / "site" / "figures" / "dot.png").read_bytes() == png
    for gone in ("SECRET_HIDDEN", "HIDDEN_INPUT", "HIDDEN_OUT", "NOT_INCLUDED", "default_exp", "#| ", "x = 1"):
        assert gone not in text, gone
    for shown in ("shown_export", "printed 42", "VISIBLE_INPUT", "GPU_CELL", "progress 100%"):
        assert shown in text, shown
    assert "celltag_sc-export" in demo and "celltag_sc-cuda" in demo
    assert "widget-view" not in demo and not res["warnings"]
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'href="00_other.html"' in index and 'href="01_demo.html"' in index and "A demo page." in index
    # a broken link is reported, the build still succeeds; the output folder is only emptied when it is ours
    nbformat.write(
        _nb(
            ("md", "# broken\n\n[gone](99_gone.ipynb) ![x](missing.png)"),
        ),
        nbs / "02_broken.ipynb",
    )
    res = bd.build(tmp_path / "site", nbs=nbs, quiet=True)
    assert any("99_gone.ipynb" in w for w in res["warnings"]) and any("missing.png" in w for w in res["warnings"])
    (nbs / "index.ipynb").unlink()  # without an index notebook, a home page is made
    res = bd.build(tmp_path / "site", nbs=nbs, quiet=True)
    assert (
        res["pages"][0]["stem"] == "index" and 'href="00_other.html"' in (tmp_path / "site" / "index.html").read_text()
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(bd.DocsError, match="refusing"):
        bd.build(tmp_path / "mine", nbs=nbs, quiet=True)
    with pytest.raises(bd.DocsError, match="refusing"):
        bd.build(nbs, nbs=nbs, quiet=True)
    assert (tmp_path / "mine" / "keep.txt").exists()


# ------------------------------------------------------------------------------------------- browser
class DevTools:
    "A minimal Chrome DevTools protocol client for one page target."

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.n, self.events = 0, []

    def _recv(self, timeout: float):
        import websocket

        self.ws.settimeout(max(timeout, 0.01))
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None

    def send(self, method: str, timeout: float = 30, **params):
        self.n += 1
        mid = self.n
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._recv(end - time.monotonic())
            if msg is None:
                continue
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no answer to {method} in {timeout} s")

    def wait(self, cond, timeout: float = 30, what: str = "a condition"):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise TimeoutError(f"waited {timeout} s for {what}")
            msg = self._recv(min(0.25, end - time.monotonic()))
            if msg and "method" in msg:
                self.events.append(msg)

    def evaluate(self, expr: str, timeout: float = 30):
        r = self.send("Runtime.evaluate", timeout=timeout, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:60]}...: {r['exceptionDetails']}")
        return r["result"].get("value")

    def load(self, url: str, timeout: float = 40) -> list:
        "Navigate, wait for the load event, MathJax, fonts and an idle network; returns this page's events."
        start = len(self.events)
        self.send("Page.navigate", url=url)
        mine = lambda: self.events[start:]
        self.wait(lambda: any(e["method"] == "Page.loadEventFired" for e in mine()), timeout, f"{url} to load")
        self.evaluate("window.MathJax && MathJax.startup ? MathJax.startup.promise.then(() => true) : false", timeout)
        self.evaluate("document.fonts.ready.then(() => true)", timeout)

        def idle():
            open_ = set()
            for e in mine():
                m, rid = e["method"], e["params"].get("requestId")
                if m == "Network.requestWillBeSent":
                    open_.add(rid)
                elif m in ("Network.loadingFinished", "Network.loadingFailed"):
                    open_.discard(rid)
            return not open_

        self.wait(idle, timeout, f"the requests of {url} to finish")
        return mine()

    def close(self):
        import websocket

        try:
            self.ws.close()
        except (OSError, websocket.WebSocketException):
            pass  # the browser may be gone already


@pytest.fixture(scope="module")
def server(site):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site["out"])))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip(
            "no `chromium` on PATH: install it to test the docs in a browser (Debian: apt-get install -y chromium)"
        )
    pytest.importorskip("websocket", reason="websocket-client drives Chromium over the DevTools protocol")
    profile = tmp_path_factory.mktemp("chromium-profile")
    log_path = profile.parent / "chromium.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    port_file, client = profile / "DevToolsActivePort", None
    try:
        end = time.monotonic() + 40
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"Chromium did not start: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            client.send(f"{domain}.enable")
        client.send("Network.setCacheDisabled", cacheDisabled=True)
        client.send("Emulation.setDeviceMetricsOverride", width=1280, height=860, deviceScaleFactor=1, mobile=False)
        yield client
    finally:
        if client:
            client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


_PAGE_STATE = """(() => ({
  title: document.title,
  imgs: [...document.images].map(i => ({src: (i.getAttribute('src') || '').slice(0, 90), w: i.naturalWidth, h: i.naturalHeight})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id).concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
  mathjax: window.MathJax && MathJax.version || null,
  math: document.querySelectorAll('mjx-container').length,
  mathErrors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
  sidebar: document.querySelectorAll('nav.sc-sidebar a').length,
}))()"""


def _problems(events: list, origin: str) -> list[str]:
    "Console errors, uncaught exceptions, failed or non-local requests among one page's DevTools events."
    out = []
    for e in events:
        m, p = e["method"], e["params"]
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed":
            out.append(f"request failed: {p.get('errorText')} {p.get('blockedReason', '')}")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not (url.startswith(origin) or url.split(":", 1)[0] in ("data", "blob", "about")):
                out.append(f"request leaves 127.0.0.1: {url[:120]}")
    return out


def _has_math(nb_path: Path) -> bool:
    nb = nbformat.read(nb_path, as_version=4)
    return any(c.cell_type == "markdown" and re.search(r"\$[^$\s][^$\n]*\$", c.source) for c in nb.cells)


def test_site_in_chromium(site, server, browser, tmp_path):
    t0 = time.monotonic()
    pages = site["pages"]
    state, problems = {}, []
    for p in pages:
        events = browser.load(server + p["html"])
        problems += [f"{p['html']}: {x}" for x in _problems(events, server)]
        st = state[p["html"]] = browser.evaluate(_PAGE_STATE)
        if p["stem"] == "index":
            shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
            (tmp_path / "screenshot_index.png").write_bytes(shot)
            if os.environ.get("SEMCLIP_DOCS_SCREENSHOT") == "1":
                SCREENSHOT.write_bytes(shot)
        for im in st["imgs"]:
            if not (im["w"] > 0 and im["h"] > 0):
                problems.append(f"{p['html']}: image not decoded: {im['src']}")
        if not (st["mathjax"] or "").startswith("3."):
            problems.append(f"{p['html']}: MathJax 3 did not load")
        if st["mathErrors"]:
            problems.append(f"{p['html']}: TeX errors: {st['mathErrors']}")
        if _has_math(ROOT / "nbs" / f"{p['stem']}.ipynb") and st["math"] == 0:
            problems.append(f"{p['html']}: has $math$ but MathJax typeset nothing")
        if st["sidebar"] < len(pages):
            problems.append(f"{p['html']}: the sidebar does not list every page")
    # every local link resolves: the file answers 200, the anchor exists on the target page
    status: dict[str, int] = {}
    for page, st in state.items():
        for href in st["links"]:
            if not href.startswith(server):
                continue
            url, frag = urldefrag(href)
            if url not in status:
                try:
                    with urlopen(Request(url, method="HEAD"), timeout=10) as r:
                        status[url] = r.status
                except HTTPError as e:
                    status[url] = e.code
                except URLError:
                    status[url] = -1
            if status[url] != 200:
                problems.append(f"{page}: link {href} -> HTTP {status[url]}")
                continue
            target = unquote(urlsplit(url).path).lstrip("/") or "index.html"
            # as browsers do (HTML spec, "find a potential indicated element"): the raw fragment, then decoded
            if frag and target in state and not {frag, unquote(frag)} & set(state[target]["ids"]):
                problems.append(f"{page}: link {href}: no id {frag!r} on {target}")
    assert not problems, f"{len(problems)} problem(s) in the docs site:\n" + "\n".join(problems[:60])
    assert sum(st["math"] for st in state.values()) > 0 or not any(
        _has_math(ROOT / "nbs" / f"{p['stem']}.ipynb") for p in pages
    )
    shot = (tmp_path / "screenshot_index.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000, "the screenshot of the index page looks blank"
    print(
        f"checked {len(pages)} pages, {sum(len(s['links']) for s in state.values())} links, "
        f"{sum(len(s['imgs']) for s in state.values())} images, {sum(s['math'] for s in state.values())} formulas "
        f"in {time.monotonic() - t0:.1f} s"
    )
