"""The review app against a hostile page or client: host names, origins, token, headers,
timeouts, bounded filters, header-first size checks, cancelled detections, per-client cache."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rarespot.detect.predict import TiledPredictor
from rarespot.errors import InputError
from rarespot.serve.app import create_app, serve_in_background
from rarespot.serve.settings import ServeSettings
from serve_fixtures import CLASS_NAMES, FakePredictor, png_bytes, scan_16bit

BASE_URL = "http://localhost"
TOKEN = "s3cret-token-for-tests-0123456789"


def make_client(predictor=None, base_url=BASE_URL, **settings) -> TestClient:
    return TestClient(create_app(predictor or FakePredictor(), ServeSettings(**settings)), base_url=base_url)


def upload(client, data: bytes, name: str = "scan.png", headers=None):
    return client.post("/api/detect", files={"file": (name, data, "image/png")}, headers=headers or {})


# ------------------------------------------------------------------ host names (DNS rebinding)


def test_a_foreign_host_name_is_refused_before_anything_runs():
    predictor = FakePredictor()
    client = make_client(predictor)
    for host in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example"):
        response = client.get("/api/health", headers={"host": host})
        assert response.status_code == 400, host
        assert "does not answer to the host name" in response.json()["detail"] and "allowed_hosts" in response.json()["detail"]
        assert upload(client, png_bytes(scan_16bit(32, 32)), headers={"host": host}).status_code == 400
    assert predictor.calls == 0
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    # Names operators use on a network are added in the settings.
    named = make_client(allowed_hosts=["review.ward7.example"])
    assert named.get("/api/health", headers={"host": "review.ward7.example:8000"}).status_code == 200
    assert named.get("/api/health", headers={"host": "evil.example"}).status_code == 400


# ------------------------------------------------------------------ origins (a foreign page posting scans)


def test_uploads_from_another_origin_are_refused():
    predictor = FakePredictor()
    client = make_client(predictor)
    data = png_bytes(scan_16bit(32, 32))
    for origin in ("http://evil.example", "http://localhost:9999", "https://localhost", "null"):
        response = upload(client, data, headers={"origin": origin})
        assert response.status_code == 403, origin
        assert "not accepted" in response.json()["detail"]
    assert predictor.calls == 0
    # The page itself (same origin), and scripts (no Origin), are served.
    assert upload(client, data, headers={"origin": "http://localhost"}).status_code == 200
    assert upload(client, data).status_code == 200
    assert make_client(allowed_origins=["https://portal.example"]).post(
        "/api/detect", files={"file": ("a.png", data)}, headers={"origin": "https://portal.example"}
    ).status_code == 200


def test_cross_site_subresources_are_refused_but_a_link_to_the_page_works():
    client = make_client()
    scan_id = upload(client, png_bytes(scan_16bit(32, 32))).json()["id"]
    cross = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}
    assert client.get(f"/api/scans/{scan_id}/render", headers=cross).status_code == 403
    assert client.get(f"/api/scans/{scan_id}/render", headers={"sec-fetch-site": "same-origin"}).status_code == 200
    assert client.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}).status_code == 200


# ------------------------------------------------------------------ token


def test_a_token_is_required_on_every_request_when_set():
    predictor = FakePredictor()
    client = make_client(predictor, token=TOKEN)
    for path in ("/", "/static/app.js", "/api/health", "/openapi.json", "/docs"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic ")  # a browser asks for it once
    assert upload(client, png_bytes(scan_16bit(32, 32))).status_code == 401 and predictor.calls == 0
    bearer = {"authorization": f"Bearer {TOKEN}"}
    basic = {"authorization": "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()}
    assert client.get("/api/health", headers=bearer).status_code == 200
    assert client.get("/", headers=basic).status_code == 200
    assert upload(client, png_bytes(scan_16bit(32, 32)), headers=bearer).status_code == 200
    for wrong in ("Bearer nope", "Basic " + base64.b64encode(b"operator:nope").decode(), "Basic %%%", TOKEN):
        assert client.get("/api/health", headers={"authorization": wrong}).status_code == 401, wrong


def test_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "token.txt"
    path.write_text(TOKEN + "\n")
    assert ServeSettings(token_file=path).resolved_token() == TOKEN
    monkeypatch.setenv("RARESPOT_SERVE_TOKEN", TOKEN)
    client = make_client()
    assert client.get("/api/health").status_code == 401
    assert client.get("/api/health", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    path.write_text("short\n")
    with pytest.raises(InputError, match=r"token\.txt: .*16 or more characters"):
        ServeSettings(token_file=path).resolved_token()


def test_binding_beyond_loopback_needs_a_token_and_warns():
    with pytest.raises(InputError, match="reachable from other machines.*--token-file"):
        create_app(FakePredictor(), ServeSettings(host="0.0.0.0"))
    app = create_app(FakePredictor(), ServeSettings(host="0.0.0.0", token=TOKEN))
    assert "other machines can reach" in app.state.exposure_warning
    assert create_app(FakePredictor(), ServeSettings(host="127.0.0.1")).state.exposure_warning is None


def test_serve_cli_refuses_a_public_bind_without_a_token(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"unused: refused before the model is loaded")
    result = subprocess.run(
        [sys.executable, "-m", "rarespot", "serve", "--model", str(model), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "RARESPOT_SERVE_TOKEN": ""},
    )
    assert result.returncode == 2
    stderr = " ".join(result.stderr.split())
    assert "needs an access token" in stderr and "Traceback" not in stderr


# ------------------------------------------------------------------ headers


def test_security_headers_on_pages_api_and_errors():
    client = make_client(max_upload_mb=0.01)
    responses = {
        "page": client.get("/"),
        "static": client.get("/static/app.js"),
        "api": client.get("/api/health"),
        "404": client.get("/api/scans/nope/detections"),
        "413": upload(client, b"\x89PNG\r\n\x1a\n" + b"\0" * 30000),
        "bad host": client.get("/", headers={"host": "evil.example"}),
    }
    for what, response in responses.items():
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src 'self'" in csp, what
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
        assert headers["x-frame-options"] == "DENY", what
        assert headers["x-content-type-options"] == "nosniff", what
        assert headers["referrer-policy"] == "no-referrer", what
    assert responses["404"].status_code == 404 and responses["413"].status_code == 413
    assert responses["api"].headers["cache-control"] == "no-store"  # scan data never lands in a browser cache
    scan_id = upload(client, png_bytes(scan_16bit(16, 16))).json()["id"]
    assert client.get(f"/api/scans/{scan_id}/render").headers["cache-control"] == "no-store"


def test_api_docs_work_offline_from_packaged_assets():
    client = make_client()
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "https://" not in page.text and "http://" not in page.text  # no CDN
    assert "/openapi.json" in page.text
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/static/docs.js"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset
    # Swagger UI 5 reads OpenAPI 3.1 (FastAPI's schema version); its page allows only its own inline styles.
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "'unsafe-inline'" in page.headers["content-security-policy"].split("style-src")[1].split(";")[0]
    assert "script-src 'self';" in page.headers["content-security-policy"]


# ------------------------------------------------------------------ bounded work


@pytest.mark.parametrize(
    "view, problem",
    [
        ("clahe:grid=6000", "grid=6000 is out of range"),
        ("clahe:grid=1e12", "out of range"),
        ("clahe:grid=2.5", "whole number"),
        ("gamma:g=nan", "finite number"),
        ("gamma:g=inf", "finite number"),
        ("bc:brightness=1e300", "out of range"),
        ("window:center=1,width=0", "out of range"),
        (",".join(["clahe"] * 13), "at most 12"),
        (",".join(["clahe"] * 2600), "at most 600 characters"),
    ],
)
def test_filter_parameters_and_chain_length_are_bounded_with_422(view, problem):
    client = make_client()
    scan_id = upload(client, png_bytes(scan_16bit(64, 64))).json()["id"]
    for route in ("render", "annotated"):
        response = client.get(f"/api/scans/{scan_id}/{route}", params={"view": view})
        assert response.status_code == 422, (route, response.text[:200])
        assert problem in " ".join(d["msg"] for d in response.json()["detail"])


def test_image_size_is_read_from_the_header_before_decoding(monkeypatch):
    """A small file announcing a huge image is refused without being decoded."""
    import cv2

    import rarespot.io.images as images

    decoded = []
    real = images.read_image_with_meta
    monkeypatch.setattr(images, "read_image_with_meta", lambda path: decoded.append(path) or real(path))
    client = make_client(max_pixels=4_000_000)
    big = cv2.imencode(".png", np.zeros((3000, 3000), np.uint8))[1].tobytes()  # 9 Mpx in a few KB
    assert len(big) < 100_000
    response = upload(client, big, "bomb.png")
    assert response.status_code == 413
    assert response.json()["detail"] == "bomb.png: 3000x3000 pixels is over the 4,000,000 limit (read from its header)"
    assert decoded == []
    assert upload(client, png_bytes(scan_16bit(64, 64))).status_code == 200 and len(decoded) == 1


class SlowBackend:
    """A model back-end that takes ``delay`` per batch of tiles and counts the batches it ran."""

    class_names = CLASS_NAMES

    def __init__(self, delay: float):
        self.delay = delay
        self.batches = 0

    def predict_tiles(self, tiles, conf, iou, class_agnostic, max_det):
        time.sleep(self.delay)
        self.batches += 1
        return [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)) for _ in tiles]


def test_a_timed_out_detection_stops_using_the_cpu_and_health_tells_the_truth():
    backend = SlowBackend(delay=0.1)
    predictor = TiledPredictor(backend, tile=32, overlap=0.0, batch=1)  # 100 tiles: 10 s if it ran to the end
    client = make_client(predictor, detect_timeout_s=0.4)
    response = upload(client, png_bytes(scan_16bit(320, 320)), "slow.png")
    assert response.status_code == 504
    deadline = time.monotonic() + 5
    while client.get("/api/health").json()["pending_detections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    health = client.get("/api/health").json()
    assert health["pending_detections"] == 0 and health["stopping_detections"] == 0
    stopped_at = backend.batches
    time.sleep(0.5)
    assert backend.batches == stopped_at < 15  # stopped within a batch of the timeout, and stays stopped
    # The model is free again at once: a small scan is served.
    client_fast = make_client(TiledPredictor(SlowBackend(0.0), tile=32, overlap=0.0), detect_timeout_s=5)
    assert upload(client_fast, png_bytes(scan_16bit(32, 32))).status_code == 200


def test_health_counts_a_detection_that_cannot_be_cancelled_until_it_ends():
    predictor = FakePredictor(delay_s=1.0)  # predict() takes no cancel=: it runs to its end
    client = make_client(predictor, detect_timeout_s=0.2)
    assert upload(client, png_bytes(scan_16bit(32, 32))).status_code == 504
    health = client.get("/api/health").json()
    assert health["pending_detections"] == 1 and health["stopping_detections"] == 1
    time.sleep(1.2)
    health = client.get("/api/health").json()
    assert health["pending_detections"] == 0 and health["stopping_detections"] == 0


def test_one_client_may_not_queue_more_than_its_share():
    predictor = FakePredictor(delay_s=0.4)
    app = create_app(predictor, ServeSettings(workers=2, max_pending=10, max_pending_per_client=2))
    data = png_bytes(scan_16bit(32, 32))

    async def burst():
        transport = httpx.ASGITransport(app=app, client=("10.1.1.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            return await asyncio.gather(*[client.post("/api/detect", files={"file": (f"s{i}.png", data)}) for i in range(4)])

    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    assert "this client already has 2 detections" in next(r for r in responses if r.status_code == 429).json()["detail"]


# ------------------------------------------------------------------ per-client cache


def _client_at(app, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 5000)), base_url=BASE_URL)


def test_each_client_keeps_its_own_scans():
    app = create_app(FakePredictor(), ServeSettings(cache_items=2))
    operator, other = TestClient(app, base_url=BASE_URL), TestClient(app, base_url=BASE_URL)
    for browser in (operator, other):  # the page hands each browser its own cookie
        cookie = browser.get("/").headers["set-cookie"]
        assert cookie.startswith("rarespot_client=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    mine = upload(operator, png_bytes(scan_16bit(32, 32))).json()["id"]
    theirs = [upload(other, png_bytes(scan_16bit(32, 32, seed=i))).json()["id"] for i in range(5)]
    assert operator.get(f"/api/scans/{mine}/detections").status_code == 200  # not pushed out by the other's five
    assert other.get(f"/api/scans/{theirs[0]}/detections").status_code == 404  # the other's own oldest went
    assert other.get(f"/api/scans/{theirs[-1]}/detections").status_code == 200
    # A scan id is no use to another client.
    assert other.get(f"/api/scans/{mine}/render").status_code == 404
    assert operator.get(f"/api/scans/{theirs[-1]}/render").status_code == 404


def test_when_memory_is_short_the_heaviest_address_gives_way():
    scan = scan_16bit(100, 100)  # 20 kB decoded
    app = create_app(FakePredictor(), ServeSettings(cache_items=8, cache_mb=0.1))  # room for 5

    async def run():
        async with _client_at(app, "10.0.0.5") as operator, _client_at(app, "10.0.0.66") as flood:
            mine = (await operator.post("/api/detect", files={"file": ("a.png", png_bytes(scan))})).json()["id"]
            for i in range(8):
                await flood.post("/api/detect", files={"file": (f"f{i}.png", png_bytes(scan_16bit(100, 100, seed=i)))})
            return (await operator.get(f"/api/scans/{mine}/detections")).status_code

    assert asyncio.run(run()) == 200
    assert TestClient(app, base_url=BASE_URL).get("/api/health").json()["cached_scans"] <= 5


# ------------------------------------------------------------------ connection timeouts (a real server)


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    start = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data, time.monotonic() - start


def test_unfinished_headers_and_slow_bodies_are_cut_off():
    settings = ServeSettings(header_timeout_s=1.0, body_idle_timeout_s=1.0, body_timeout_s=3.0, warmup=False)
    app = create_app(FakePredictor(), settings)
    with serve_in_background(app) as url:
        port = int(url.rsplit(":", 1)[1])
        # Headers that never end, trickled a byte at a time (which resets a plain idle timer).
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            stop = threading.Event()

            def trickle():
                while not stop.wait(0.3):
                    try:
                        sock.sendall(b"X")
                    except OSError:
                        return

            threading.Thread(target=trickle, daemon=True).start()
            data, seconds = _read_until_closed(sock, 6)
            stop.set()
            assert data.startswith(b"HTTP/1.1 408") and seconds < 3, (data[:80], seconds)
        # A body that stops arriving.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 5000\r\n\r\n--b\r\n"
            )
            data, seconds = _read_until_closed(sock, 6)
            assert data.startswith(b"HTTP/1.1 408") and b"paused too long" in data and seconds < 3, (data[:200], seconds)
        # A well-behaved client is served, without a Server header.
        response = httpx.get(f"{url}/api/health")
        assert response.status_code == 200 and "server" not in response.headers


def test_tls_serves_https_with_hsts(tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (needed to make a throwaway certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )
    settings = ServeSettings(ssl_certfile=cert, ssl_keyfile=key, warmup=False)
    app = create_app(FakePredictor(), settings)
    with serve_in_background(app) as url:
        assert url.startswith("https://")
        response = httpx.get(f"{url}/", verify=False)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert "Secure" in response.headers["set-cookie"]
    with pytest.raises(InputError, match="needs both"):
        with serve_in_background(create_app(FakePredictor(), ServeSettings(ssl_certfile=cert, warmup=False))):
            pass
