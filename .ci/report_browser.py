"""Open `retention report`'s HTML page in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) and say what happened, as one JSON object on stdout:

- requests: every request the page made other than loading itself (each is also aborted);
- console: console messages of level error or warning, and uncaught page errors;
- svgs: how many SVG charts were laid out with a non-zero size;
- screenshot: the full-page PNG's size, its share of non-white pixels and its distinct colours;
- island: the JSON island parsed in the page (its figure ids), so it is valid JSON to a browser.

Usage: report_browser.py PAGE.html SCREENSHOT.png
"""

import json
import pathlib
import sys

from PIL import Image
from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

page_path = pathlib.Path(sys.argv[1]).resolve()
shot_path = pathlib.Path(sys.argv[2])
url = page_path.as_uri()
requests, console = [], []

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
    page = browser.new_page(viewport={"width": 1100, "height": 900})

    def route(r):
        if r.request.url == url:
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(url, wait_until="load")
    svgs = page.evaluate(
        "[...document.querySelectorAll('figure svg')]"
        ".filter(s => s.getBoundingClientRect().width > 100 && s.getBoundingClientRect().height > 100).length"
    )
    island = page.evaluate(
        "Object.keys(JSON.parse(document.getElementById('report-data').textContent).figures)"
    )
    page.screenshot(path=str(shot_path), full_page=True)
    browser.close()

image = Image.open(shot_path).convert("RGB")
colours = image.getcolors(maxcolors=1 << 24) or []
white = sum(count for count, rgb in colours if rgb == (255, 255, 255))
non_white = image.width * image.height - white
print(
    json.dumps(
        {
            "requests": requests,
            "console": console,
            "svgs": svgs,
            "island": island,
            "screenshot": {
                "width": image.width,
                "height": image.height,
                "non_white_share": non_white / (image.width * image.height),
                "colours": len(colours),
            },
        }
    )
)
