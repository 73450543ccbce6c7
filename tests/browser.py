"""A real headless browser for the HTML report's tests: Chromium (or Chrome) from the system packages.

`load(page, work)` opens a copy of the page with a small probe script added to its head, lets Chromium
lay it out, and returns what the page saw: script errors, console errors, resources it loaded, and the
rendered size of every plot. Chromium's own console log (stderr) is read too. No DevTools client is
needed: the probe writes its findings into the DOM, and `--dump-dom` returns the DOM after load.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT_S = 120          # a cold Chromium start on a busy 2-core machine takes a few seconds; this is generous

PROBE = """<script>
(function () {
  var seen = {errors: [], console: []};
  window.addEventListener("error", function (e) {
    var t = e.target;
    seen.errors.push(t && t !== window && (t.src || t.href) ? "failed to load " + (t.src || t.href) : String(e.message));
  }, true);
  var orig = console.error;
  console.error = function () { seen.console.push(Array.prototype.join.call(arguments, " ")); orig.apply(console, arguments); };
  window.addEventListener("load", function () {
    var plots = [];
    document.querySelectorAll("figure.plot").forEach(function (f) {
      var svg = f.querySelector("svg");
      var r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
      plots.push({id: f.id, width: r.width, height: r.height, paths: svg ? svg.querySelectorAll("path").length : 0,
                  texts: svg ? svg.querySelectorAll("text").length : 0});
    });
    var res = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    var out = document.createElement("pre");
    out.id = "nn-doctor-browser-probe";
    out.textContent = JSON.stringify({errors: seen.errors, console: seen.console, resources: res, plots: plots,
                                      title: document.title, width: document.documentElement.scrollWidth,
                                      height: document.documentElement.scrollHeight});
    document.body.appendChild(out);
  });
})();
</script>"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], work: Path) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={work / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)


def load(browser: str, page: Path, work: Path, width: int = 1100) -> dict:
    """Open `page` (through an instrumented copy) in a window `width` px wide and return what it saw (its
    height included, for a screenshot of the whole page at that width), plus Chromium's console lines."""
    html = page.read_text(encoding="utf-8")
    probed = work / ("probed-" + page.name)
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    proc = _run(browser, [f"--window-size={width},1000", "--dump-dom", probed.resolve().as_uri()], work)
    m = re.search(r'<pre id="nn-doctor-browser-probe">(.*?)</pre>', proc.stdout, re.S)
    if not m:
        raise AssertionError(f"the browser returned no probe result (exit {proc.returncode}): {proc.stderr[-2000:]}")
    import html as htmllib
    seen = json.loads(htmllib.unescape(m.group(1)))
    seen["console_log"] = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return seen


def screenshot(browser: str, page: Path, png: Path, work: Path, size: tuple[int, int] = (1100, 4000)) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(browser, [f"--window-size={size[0]},{size[1]}", f"--screenshot={png.resolve()}",
                          page.resolve().as_uri()], work)
    if not png.exists():
        raise AssertionError(f"no screenshot written (exit {proc.returncode}): {proc.stderr[-2000:]}")
