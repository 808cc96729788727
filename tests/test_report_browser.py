"""The study report in a real browser: headless Chromium opens report.html offline, with no
console error, and every image decodes to a non-zero size.

A copy of the report gets a small script at the top of <head> that records errors (uncaught
exceptions, console.error, resources that fail to load) and, on load, writes a verdict as JSON
into <pre id="verdict">; Chromium's --dump-dom prints the page after load, so the verdict is read
from its output. Chromium's own log (--enable-logging=stderr) is searched for console messages
and uncaught exceptions too. Skipped, saying why, where Chromium is not installed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_study import _tiny_study

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var what = e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href))
                                                || "a resource")).slice(0, 80);
  window.__errors.push(String(what));
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var bad = images.filter(function (i) {
    return !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  }).map(function (i) { return i.alt || "(no alt)"; });
  var pre = document.createElement("pre");
  pre.id = "verdict";
  pre.textContent = JSON.stringify({images: images.length, bad: bad, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


def render(page: Path, tmp_path: Path) -> tuple[dict, str]:
    """Open a copy of `page` with the probe in headless Chromium: (verdict, Chromium's log)."""
    probed = tmp_path / f"probed-{page.name}"
    text = page.read_text()
    assert "<head>" in text
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    # --host-resolver-rules: no name resolves, so the page must not need the network
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
         probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="verdict">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no verdict in Chromium's output (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), done.stderr


def console_problems(log: str) -> list[str]:
    """Lines of Chromium's log that report a page's console message or uncaught exception."""
    return [line for line in log.splitlines() if "CONSOLE(" in line or "Uncaught" in line]


@pytest.mark.slow
def test_the_report_renders_in_chromium_without_errors(tmp_path_factory, tmp_path):
    chromium()
    out, summary = _tiny_study(tmp_path_factory.getbasetemp())
    verdict, log = render(out / "report.html", tmp_path)
    assert verdict["errors"] == [] and console_problems(log) == []
    assert verdict["bad"] == []
    # 2 recipes x (reconstructions, samples), 2 training curves, the coupled diagnostics and
    # tiny losses, the scaling fit, Lipschitz bars, spectrum and cosine histogram
    assert verdict["images"] >= 12


def test_the_probe_sees_broken_images_and_script_errors(tmp_path):
    """The check can fail: a page with an undecodable image and a script error is caught."""
    chromium()
    page = tmp_path / "broken.html"
    gif = "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="  # 1x1 pixel
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                    f'<img alt="good" src="data:image/gif;base64,{gif}">'
                    '<img alt="broken" src="data:image/png;base64,bm90IGEgcG5n">'
                    '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    verdict, log = render(page, tmp_path)
    assert verdict["bad"] == ["broken"] and verdict["images"] == 2
    assert any("boom" in e for e in verdict["errors"])
    assert any("undefinedFunction" in e for e in verdict["errors"])
