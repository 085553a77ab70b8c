"""Open a cfcl report in headless Chromium and check it renders: no console messages, every figure shown.

Usage: python scripts/check_report_browser.py RUN_DIR_OR_INDEX_HTML [--chromium PATH] [--screenshot PNG]

A copy of ``index.html`` is placed alone in an empty temporary folder (so any relative or
external reference would fail to load) with a small probe script appended; Chromium loads it
offline, and ``--dump-dom`` returns the probe's findings: the number of ``<img>`` elements,
those not decoded (``naturalWidth == 0``) and every resource the page fetched. Console
messages are read from Chromium's log (the report itself has no scripts, so any message is a
fault). ``--screenshot PNG`` also saves what a reader sees first: the top of the page in a
1280 x 900 window. Prints one JSON line; exit status 0 when the page passes. Chromium on Debian:
``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const report = {
    images: images.length,
    broken: images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt || i.src.slice(0, 60)),
    resources: performance.getEntriesByType("resource").map((e) => e.name).filter((n) => !n.startsWith("data:")),
  };
  const out = document.createElement("pre");
  out.id = "cfcl-probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
    "--dump-dom",
]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")
FIRST_SCREEN = "1280,900"  # width, height in CSS pixels of the window the screenshot shows


def find_index(path: Path) -> Path:
    for candidate in (path, path / "index.html", path / "report" / "index.html"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"check_report_browser: no index.html at {path}")


def check(index: Path, chromium: str, screenshot: Path | None = None) -> dict:
    html = index.read_text(encoding="utf-8")
    if "</body>" not in html:
        return {"ok": False, "error": f"{index} has no </body>"}
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page" / "index.html"
        page.parent.mkdir()
        page.write_text(html.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
        profile = Path(tmp) / "profile"
        tic = time.time()
        done = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        seconds = round(time.time() - tic, 2)
        if screenshot is not None:
            flags = [f for f in FLAGS if f != "--dump-dom"]
            shot = subprocess.run(
                [
                    chromium,
                    *flags,
                    f"--user-data-dir={profile}",
                    f"--window-size={FIRST_SCREEN}",
                    f"--screenshot={screenshot.resolve()}",
                    page.as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if shot.returncode != 0 or not screenshot.is_file():
                return {
                    "ok": False,
                    "error": f"chromium exited {shot.returncode} without a screenshot",
                    "stderr_tail": shot.stderr[-500:],
                }
    console = [m.group(1) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]
    found = re.search(r'<pre id="cfcl-probe">(.*?)</pre>', done.stdout, re.S)
    if done.returncode != 0 or found is None:
        return {
            "ok": False,
            "error": f"chromium exited {done.returncode} without the probe's result",
            "console": console,
            "stderr_tail": done.stderr[-500:],
        }
    probe = json.loads(
        found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )
    ok = not console and not probe["broken"] and not probe["resources"] and probe["images"] > 0
    return {
        "ok": ok,
        "index": str(index),
        "images": probe["images"],
        "broken": probe["broken"],
        "external_resources": probe["resources"],
        "console": console,
        "seconds": seconds,
        **({"screenshot": str(screenshot)} if screenshot is not None else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="run folder, report folder or index.html")
    parser.add_argument(
        "--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    )
    parser.add_argument("--screenshot", type=Path, help="also save the first screen (1280 x 900) as this PNG")
    args = parser.parse_args()
    result = check(find_index(args.report), args.chromium, args.screenshot)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
