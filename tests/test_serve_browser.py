"""End to end in headless Chromium: upload a 16-bit scan, see boxes drawn, move the slider.

Needs Debian's ``chromium`` (``apt-get install chromium``; CI's script installs
it) and the ``playwright`` Python package, which drives it without a download
of its own browser. Skips with a message where either is missing.

Set RARESPOT_REVIEW_SCREENSHOT=docs/img/review_app.png to keep the screenshot.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rarespot.io.images import write_image
from rarespot.serve.app import create_app, serve_in_background
from rarespot.serve.settings import ServeSettings
from serve_fixtures import FakePredictor, body_scan

CHROMIUM = Path(os.environ.get("RARESPOT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RARESPOT_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def green_canvas_pixels(page) -> int:
    """Box-green pixels on the viewer canvas: proof the boxes were drawn, not just counted."""
    return page.evaluate(
        """() => {
            const c = document.getElementById('view');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 180 && d[i] < 90 && d[i + 2] < 90) n++;
            return n;
        }"""
    )


def test_upload_16bit_scan_draw_boxes_and_filter_by_confidence(browser, tmp_path):
    scan = write_image(tmp_path / "body_16bit.png", body_scan(608, 496))
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    # Scores 0.9, 0.6, 0.2 (and 0.01, under the 0.05 floor); the slider starts at 0.25.
    app = create_app(FakePredictor(), ServeSettings(default_conf=0.25))

    with serve_in_background(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.on("console", lambda msg: "Content Security Policy" in msg.text and page_errors.append(msg.text))
        page.goto(url + "/")
        page.wait_for_selector("#model option[value=fake]", state="attached")

        page.set_input_files("#file", str(scan))
        page.wait_for_selector("body[data-state=ready]")
        count = page.locator("#box-count")
        assert count.get_attribute("data-count") == "2"
        assert page.locator("#view").get_attribute("data-drawn-boxes") == "2"
        assert green_canvas_pixels(page) > 200
        assert "body_16bit.png — 496×608 uint16 PNG" in page.locator("#status").inner_text()

        # Move the slider: fewer boxes above 0.7, more above 0.1, none above 0.95.
        slider = page.locator("#conf")
        for value, expected in (("0.7", "1"), ("0.1", "3"), ("0.95", "0")):
            slider.fill(value)
            assert count.get_attribute("data-count") == expected, value
        assert green_canvas_pixels(page) == 0
        slider.fill("0.25")

        # A view filter re-renders the scan on the server.
        with page.expect_response(lambda r: "/render?view=gamma" in r.url and r.status == 200):
            page.select_option("#preset", "gamma-clahe")
        assert page.locator("#spec").input_value() == "gamma:g=0.8,clahe:clip=2"

        # Zoom with the wheel, pan by dragging; boxes stay drawn.
        view = page.locator("#view")
        zoom_fit = float(view.get_attribute("data-zoom"))
        page.mouse.move(500, 400)
        page.mouse.wheel(0, -600)
        page.wait_for_function(f"Number(document.getElementById('view').dataset.zoom) > {zoom_fit * 2}")
        pan = view.get_attribute("data-pan")
        page.mouse.down()
        page.mouse.move(560, 430, steps=4)
        page.mouse.up()
        x0, y0 = map(int, pan.split(","))
        x1, y1 = map(int, view.get_attribute("data-pan").split(","))
        assert (x1 - x0, y1 - y0) == (60, 30)
        assert green_canvas_pixels(page) > 0

        # Downloads point at the cached scan with the slider's threshold.
        assert "conf=0.25" in page.locator("#dl-json").get_attribute("href")
        with page.expect_download() as download:
            page.click("#dl-png")
        assert download.value.suggested_filename == "body_16bit_annotated.png"

        page.dblclick("#stage")  # back to fit for the screenshot
        keep = os.environ.get("RARESPOT_REVIEW_SCREENSHOT")
        shot = tmp_path / "review_app.png"
        page.screenshot(path=str(shot))
        if keep:  # for the docs: a 64-colour PNG is a fraction of the size and looks the same
            from PIL import Image

            small = Image.open(shot).convert("RGB").quantize(
                64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
            )
            small.save(keep, optimize=True)

        # A bad file: the page shows the API's message naming the file.
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#message:not([hidden])")
        assert page.locator("#message").inner_text() == "notes.png: content is not a PNG, TIFF, DICOM or JPEG image"
        assert page.evaluate("document.body.dataset.state") == "error"
        assert page_errors == []


def _only_this_machine(page) -> list[str]:
    """Abort every request that leaves the machine (as offline, or behind a firewall); returns them."""
    blocked: list[str] = []

    def route(r):
        host = r.request.url.split("/")[2].split(":")[0] if "://" in r.request.url else ""
        if host in ("127.0.0.1", "localhost") or r.request.url.startswith(("data:", "blob:")):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    return blocked


def test_api_docs_render_offline_under_the_csp(browser):
    with serve_in_background(create_app(FakePredictor(), ServeSettings(warmup=False))) as url:
        page = browser.new_page()
        blocked = _only_this_machine(page)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: "Content Security Policy" in msg.text and problems.append(msg.text))
        page.goto(url + "/docs")
        page.wait_for_selector(".opblock", timeout=20000)
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/detect" in operations and "/api/scans/{scan_id}/render" in operations
        assert blocked == [] and problems == []


def test_a_foreign_page_can_neither_post_scans_nor_frame_the_app(browser, tmp_path):
    """A page on another origin (here another port of this machine) tries what a hostile site would."""
    import functools
    import http.server
    import threading

    predictor = FakePredictor()
    app = create_app(predictor, ServeSettings(warmup=False))
    scan_png = write_image(tmp_path / "scan.png", body_scan(64, 64)).read_bytes()
    with serve_in_background(app) as url:
        evil = tmp_path / "evil"
        evil.mkdir()
        (evil / "index.html").write_text(
            f"""<!doctype html><body><iframe id="f" src="{url}/"></iframe><script>
            window.result = "pending";
            const bytes = new Uint8Array({list(scan_png)});
            const form = new FormData();
            form.append("file", new Blob([bytes], {{type: "image/png"}}), "pwn.png");
            fetch("{url}/api/detect", {{method: "POST", body: form, mode: "no-cors"}})
              .then(() => window.result = "sent", () => window.result = "failed");
            </script></body>"""
        )
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(evil))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            page.wait_for_function("window.result !== 'pending'", timeout=15000)
            page.wait_for_timeout(300)
            # The upload reached the server and was refused: the model never ran, nothing was cached.
            assert predictor.calls == 0
            assert app.state.cache.__len__() == 0
            # The app refused to be framed: the frame holds no review page.
            frame = page.frame_locator("#f")
            assert frame.locator("#file").count() == 0
        finally:
            server.shutdown()


def test_with_a_token_the_browser_signs_in_and_works(browser, tmp_path):
    token = "browser-token-0123456789abcdef"
    scan = write_image(tmp_path / "scan.png", body_scan(128, 112))
    with serve_in_background(create_app(FakePredictor(), ServeSettings(token=token, warmup=False))) as url:
        anonymous = browser.new_context()
        assert anonymous.request.get(url + "/").status == 401  # (a page would show the browser's sign-in prompt)
        anonymous.close()
        context = browser.new_context(http_credentials={"username": "operator", "password": token})
        page = context.new_page()
        assert page.goto(url + "/").status == 200
        page.wait_for_selector("#model option[value=fake]", state="attached")
        page.set_input_files("#file", str(scan))
        page.wait_for_selector("body[data-state=ready]")
        assert page.locator("#box-count").get_attribute("data-count") == "2"
        context.close()
