"""The review app's HTTP API (FastAPI TestClient = httpx): shapes, exact values, limits, bad input."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rarespot.errors import InputError
from rarespot.serve.app import create_app
from rarespot.serve.routes.detect import sanitize_filename, sniff_format
from rarespot.serve.settings import ServeSettings
from helpers_io import write_dicom
from serve_fixtures import CLASS_NAMES, FakePredictor, png_bytes, scan_16bit, tiny_yolo


BASE_URL = "http://localhost"  # a host name the server answers to (TestClient's default "testserver" is not)


def make_client(predictor=None, **settings) -> TestClient:
    return TestClient(create_app(predictor or FakePredictor(), ServeSettings(**settings)), base_url=BASE_URL)


def upload(client: TestClient, data: bytes, name: str = "scan.png", **form):
    return client.post("/api/detect", files={"file": (name, data, "application/octet-stream")}, data=form)


# ------------------------------------------------------------------ service endpoints


def test_health_and_model_info():
    client = make_client()
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["models"] == ["fake"] and health["pending_detections"] == 0
    assert health["stopping_detections"] == 0
    models = client.get("/api/models").json()
    assert models == [
        {
            "name": "fake", "default": True, "class_names": CLASS_NAMES, "floor_conf": 0.05,
            "tile": None, "overlap": None, "iou": None, "merge": None, "input_mapping": None, "runtime": None,
        }
    ]


def test_openapi_documents_the_endpoints():
    client = make_client()
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/detect", "/api/health", "/api/models", "/api/scans/{scan_id}/render",
                 "/api/scans/{scan_id}/annotated", "/api/scans/{scan_id}/detections"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/api/detect"]["post"]["requestBody"]["content"]
    assert {"413", "415", "504"} <= set(paths["/api/detect"]["post"]["responses"])
    assert client.get("/docs").status_code == 200


def test_page_and_static_files_are_served_locally():
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # No CDN, no external fonts or scripts: every src/href is local.
    text = page.text + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in text and "https://" not in text


# ------------------------------------------------------------------ detect


def test_detect_16bit_png_returns_boxes_above_the_floor_best_first():
    client = make_client()
    image = scan_16bit(h=300, w=240)
    response = upload(client, png_bytes(image), "body scan.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["dtype"], body["channels"]) == (240, 300, "uint16", 1)
    assert body["format"] == "PNG" and body["filename"] == "body scan.png" and body["model"] == "fake"
    assert body["value_range"] == [float(image.min()), float(image.max())]
    # The 0.01 box is under the 0.05 floor; the rest come back best first, in image pixels.
    assert body["detections"] == [
        {"x1": 24.0, "y1": 30.0, "x2": 72.0, "y2": 90.0, "score": 0.9, "label": 0, "class_name": "knife"},
        {"x1": 120.0, "y1": 150.0, "x2": 168.0, "y2": 240.0, "score": 0.6, "label": 1, "class_name": "gun"},
        {"x1": 48.0, "y1": 180.0, "x2": 96.0, "y2": 270.0, "score": 0.2, "label": 0, "class_name": "knife"},
    ]


@pytest.mark.parametrize("kind", ["tiff16", "jpeg8", "dicom16", "dicom_no_suffix", "rgb_png8"])
def test_detect_reads_every_accepted_format(tmp_path, kind):
    import tifffile

    image = scan_16bit(h=128, w=96)
    if kind == "tiff16":
        buf = io.BytesIO()
        tifffile.imwrite(buf, image)
        data, name, dtype = buf.getvalue(), "scan.tif", "uint16"
    elif kind == "jpeg8":
        data, name, dtype = cv2.imencode(".jpg", (image >> 8).astype(np.uint8))[1].tobytes(), "scan.jpg", "uint8"
    elif kind.startswith("dicom"):
        data = write_dicom(tmp_path / "x.dcm", image, window=(10000, 4000)).read_bytes()
        name, dtype = ("scan.dcm" if kind == "dicom16" else "IM000123"), "uint16"
    else:
        rgb = np.dstack([(image >> 8).astype(np.uint8)] * 3)
        data, name, dtype = png_bytes(rgb), "colour.png", "uint8"
    response = upload(make_client(), data, name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["dtype"]) == (96, 128, dtype)
    assert len(body["detections"]) == 3
    # A DICOM's own display window reaches the page's window/level controls.
    assert body["window"] == ([10000.0, 4000.0] if kind.startswith("dicom") else None)


@pytest.mark.parametrize("side, names_file", [(300, False), (200, True)])
def test_upload_over_the_size_limit_is_413_before_decoding(side, names_file):
    """Far over: refused by Content-Length before parsing.
    Just over (within the multipart allowance): refused by the handler, naming the file."""
    predictor = FakePredictor()
    client = make_client(predictor, max_upload_mb=0.05)  # 52 KB
    data = png_bytes(np.random.default_rng(0).integers(0, 65535, (side, side)).astype(np.uint16))
    assert len(data) > 0.05 * 2**20
    response = upload(client, data, "big.png")
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "over the server's 0.05 MB limit" in detail
    assert detail.startswith("big.png: ") == names_file
    assert predictor.calls == 0


def test_chunked_upload_over_the_size_limit_is_413():
    """A body sent without Content-Length is counted as it arrives."""
    client = make_client(max_upload_mb=0.05)
    data = png_bytes(np.random.default_rng(0).integers(0, 65535, (300, 300)).astype(np.uint16))
    boundary = "rarespotboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for i in range(0, len(body), 16384):
            yield body[i : i + 16384]

    response = client.post(
        "/api/detect", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


@pytest.mark.parametrize(
    "name, data, status, problem",
    [
        ("notes.exe", b"MZ\x90\x00", 415, "file type '.exe' is not accepted"),
        ("scan.bmp", b"BM" + b"\0" * 100, 415, "file type '.bmp' is not accepted"),
        ("scan.png", b"just some text, not an image", 415, "content is not a PNG, TIFF, DICOM or JPEG image"),
        ("scan.png", b"", 400, "the file is empty"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, 400, "truncated PNG (no end chunk)"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50 + b"IEND\xaeB`\x82", 400, "corrupt or unreadable PNG"),
        ("cut.jpg", b"\xff\xd8\xff\xe0" + b"\x11" * 300, 400, "corrupt JPEG"),
        ("bad.tif", b"II*\x00" + b"\xff" * 64, 400, "corrupt or unreadable TIFF"),
    ],
)
def test_bad_uploads_name_the_file_and_the_problem(name, data, status, problem):
    predictor = FakePredictor()
    response = upload(make_client(predictor), data, name)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: ") and problem in detail
    assert "rarespot-serve" not in detail and "/tmp" not in detail  # the server's temp path is never shown
    assert predictor.calls == 0


def test_client_path_never_reaches_the_file_system(tmp_path, monkeypatch):
    """A hostile file name is echoed as a bare, sanitised name; nothing is written under it."""
    monkeypatch.chdir(tmp_path)
    hostile = "../../../../tmp/evil<script>.png"
    response = upload(make_client(), png_bytes(scan_16bit(64, 64)), hostile)
    assert response.status_code == 200
    assert response.json()["filename"] == "evil_script_.png"
    assert not (tmp_path / "evil<script>.png").exists() and list(tmp_path.iterdir()) == []
    assert sanitize_filename("C:\\Users\\op\\scan 1.png") == "scan 1.png"
    assert sanitize_filename("") == "upload"
    assert sanitize_filename("..") == "upload"


def test_sniffing_recognises_each_format_by_its_magic_bytes():
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "PNG"
    assert sniff_format(b"\xff\xd8\xff\xe1") == "JPEG"
    assert sniff_format(b"II*\x00") == sniff_format(b"MM\x00*") == "TIFF"
    assert sniff_format(b"\0" * 128 + b"DICM") == "DICOM"
    assert sniff_format(b"GIF89a") is None


def test_unknown_model_is_400_with_the_choices():
    response = upload(make_client(), png_bytes(scan_16bit(64, 64)), model="nope")
    assert response.status_code == 400
    assert response.json()["detail"] == "unknown model 'nope'; available: fake"


def test_model_list_picks_the_requested_model():
    slow, fast = FakePredictor(base_scores=(0.3,)), FakePredictor(base_scores=(0.8, 0.7))
    slow.name, fast.name = "first", "second"
    client = TestClient(create_app([slow, fast], ServeSettings()), base_url=BASE_URL)
    assert [m["name"] for m in client.get("/api/models").json()] == ["first", "second"]
    body = upload(client, png_bytes(scan_16bit(64, 64)), model="second").json()
    assert body["model"] == "second" and [d["score"] for d in body["detections"]] == [0.8, 0.7]
    assert upload(client, png_bytes(scan_16bit(64, 64))).json()["model"] == "first"


def test_model_failure_is_a_500_that_says_what_happened():
    class Broken(FakePredictor):
        def predict(self, image):
            raise RuntimeError("CUDA out of memory")

    response = upload(make_client(Broken()), png_bytes(scan_16bit(64, 64)), "x.png")
    assert response.status_code == 500
    assert response.json()["detail"] == "x.png: detection failed (RuntimeError: CUDA out of memory)"


def test_slow_detection_times_out_with_504():
    client = make_client(FakePredictor(delay_s=1.5), detect_timeout_s=0.2)
    response = upload(client, png_bytes(scan_16bit(64, 64)), "slow.png")
    assert response.status_code == 504
    assert response.json()["detail"] == "slow.png: detection took longer than the 0.2 s limit"


def test_requests_that_timed_out_while_queued_never_run_the_model():
    import time

    predictor = FakePredictor(delay_s=0.8)
    app = create_app(predictor, ServeSettings(workers=2, detect_timeout_s=0.3))
    data = png_bytes(scan_16bit(64, 64))

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            return await asyncio.gather(
                *[client.post("/api/detect", files={"file": (f"s{i}.png", data)}) for i in range(3)]
            )

    assert [r.status_code for r in asyncio.run(burst())] == [504, 504, 504]
    time.sleep(1.2)  # the first prediction finishes in the background; the queued two see the flag
    assert predictor.calls == 1


def test_model_is_used_by_one_request_at_a_time_and_overload_is_503():
    predictor = FakePredictor(delay_s=0.3)
    app = create_app(predictor, ServeSettings(workers=2, max_pending=3))
    data = png_bytes(scan_16bit(64, 64))

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            return await asyncio.gather(
                *[client.post("/api/detect", files={"file": (f"s{i}.png", data)}) for i in range(5)]
            )

    codes = sorted(r.status_code for r in asyncio.run(burst()))
    assert codes == [200, 200, 200, 503, 503]
    assert predictor.max_active == 1  # two worker threads, but the model lock serialises them


def test_cache_is_bounded_lru():
    client = make_client(cache_items=2)
    ids = [upload(client, png_bytes(scan_16bit(32, 32, seed=i))).json()["id"] for i in range(3)]
    assert client.get(f"/api/scans/{ids[0]}/detections").status_code == 404
    assert "upload the scan again" in client.get(f"/api/scans/{ids[0]}/render").json()["detail"]
    assert client.get(f"/api/scans/{ids[2]}/detections").status_code == 200
    assert client.get("/api/health").json()["cached_scans"] == 2


# ------------------------------------------------------------------ render, downloads


def _decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_render_returns_8bit_png_and_filters_change_it():
    client = make_client()
    scan_id = upload(client, png_bytes(scan_16bit(120, 100))).json()["id"]
    plain = client.get(f"/api/scans/{scan_id}/render")
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    base = _decode_png(plain.content)
    assert base.shape[:2] == (120, 100) and base.dtype == np.uint8
    for spec in ("clahe:clip=3", "gamma:g=0.5", "bc:brightness=0.2,contrast=1.5",
                 "window:center=10000,width=4000", "window:center=10000,width=4000,clahe:clip=2,gamma:g=0.8"):
        filtered = client.get(f"/api/scans/{scan_id}/render", params={"view": spec})
        assert filtered.status_code == 200, (spec, filtered.text)
        out = _decode_png(filtered.content)
        assert out.shape[:2] == (120, 100) and out.dtype == np.uint8
        assert not np.array_equal(out, base), spec


def test_render_bad_filter_and_unknown_scan_are_clear_errors():
    client = make_client()
    scan_id = upload(client, png_bytes(scan_16bit(32, 32))).json()["id"]
    bad = client.get(f"/api/scans/{scan_id}/render", params={"view": "sparkle:amount=3"})
    assert bad.status_code == 422 and "unknown view filter 'sparkle'" in bad.json()["detail"][0]["msg"]
    refused = client.get(f"/api/scans/{scan_id}/render", params={"view": "gamma:g=-1"})
    assert refused.status_code == 422 and "g=-1 is out of range" in refused.json()["detail"][0]["msg"]
    missing = client.get("/api/scans/not-an-id/render")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]


def test_annotated_png_draws_only_boxes_at_or_above_conf():
    client = make_client()
    scan_id = upload(client, png_bytes(np.full((200, 200), 20000, np.uint16)), "flat.png").json()["id"]

    def green_pixels(conf):
        response = client.get(f"/api/scans/{scan_id}/annotated", params={"conf": conf})
        assert response.status_code == 200
        assert response.headers["content-disposition"] == 'attachment; filename="flat_annotated.png"'
        bgr = _decode_png(response.content)
        assert bgr.shape == (200, 200, 3)
        return int(((bgr[:, :, 1] > 150) & (bgr[:, :, 0] < 100) & (bgr[:, :, 2] < 100)).sum())

    assert green_pixels(0.95) == 0
    one, two = green_pixels(0.7), green_pixels(0.5)
    assert 0 < one < two


def test_detections_download_filters_by_conf():
    client = make_client()
    scan_id = upload(client, png_bytes(scan_16bit(100, 100)), "a b.png").json()["id"]
    response = client.get(f"/api/scans/{scan_id}/detections", params={"conf": 0.5})
    assert response.headers["content-disposition"] == 'attachment; filename="a_b_detections.json"'
    body = response.json()
    assert body["file"] == "a b.png" and body["conf"] == 0.5
    assert [d["score"] for d in body["detections"]] == [0.9, 0.6]


# ------------------------------------------------------------------ settings, CLI, real model


def test_settings_load_from_yaml_and_bad_keys_name_the_file(tmp_path):
    good = tmp_path / "serve.yaml"
    good.write_text("models: m.pt\nmax_upload_mb: 16\ndetect_timeout_s: 30\n")
    settings = ServeSettings.from_yaml(good)
    assert settings.models[0].name == "m.pt" and settings.max_upload_bytes == 16 * 2**20
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_upload_mbb: 16\n")
    with pytest.raises(InputError, match=r"bad\.yaml: invalid settings: max_upload_mbb"):
        ServeSettings.from_yaml(bad)
    with pytest.raises(InputError, match="settings file not found"):
        ServeSettings.from_yaml(tmp_path / "missing.yaml")
    views = tmp_path / "views.yaml"
    views.write_text("models: m.pt\ntta: flips\n")
    assert ServeSettings.from_yaml(views).inference().tta == "flips"  # the served predictor runs the views
    views.write_text("models: m.pt\ntta: rot90\n")
    with pytest.raises(InputError, match=r"views\.yaml: invalid settings: tta: tta must be one of none, hflip, flips"):
        ServeSettings.from_yaml(views)


def test_create_app_with_missing_model_file_names_it(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pt: model file not found"):
        create_app(tmp_path / "nope.pt")


def test_serve_cli_missing_model_is_one_line_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rarespot", "serve", "--model", str(tmp_path / "gone.pt")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    stderr = " ".join(result.stderr.split())  # rich wraps long lines at the terminal width
    assert "gone.pt: model file not found" in stderr and "Traceback" not in stderr


def test_serve_cli_bad_option_value_is_one_line_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rarespot", "serve", "--model", str(tmp_path / "m.pt"), "--backend", "gpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    stderr = " ".join(result.stderr.split())
    assert "backend: backend must be one of auto, openvino, onnxruntime, torch (got 'gpu')" in stderr, stderr
    assert "Traceback" not in stderr


def test_served_model_runs_on_the_backend_asked_for(tmp_path):
    import torch

    torch.set_num_threads(2)
    model = tiny_yolo(tmp_path / "tiny.pt")
    client = TestClient(create_app(model, ServeSettings(tile=256, backend="torch", warmup=False)), base_url=BASE_URL)
    assert client.get("/api/models").json()[0]["runtime"] == "torch"


def test_detect_with_a_real_tiled_predictor_on_an_untrained_yolo(tmp_path):
    """The real path: TiledPredictor on a tiny untrained yolo11n, 16-bit upload, boxes back."""
    import torch

    torch.set_num_threads(2)
    model = tiny_yolo(tmp_path / "tiny.pt")
    # An untrained model scores below ~1e-3: a floor of 1e-4 lets its boxes through.
    client = TestClient(create_app(model, ServeSettings(floor_conf=1e-4, tile=256, overlap=0.1, batch=4)), base_url=BASE_URL)
    info = client.get("/api/models").json()[0]
    assert info["name"] == "tiny" and info["class_names"] == CLASS_NAMES and info["tile"] == 256
    # `auto` on the CPU, as in `detect predict`: with OpenVINO installed the .pt runs as its cached ONNX export.
    from rarespot.detect.backends import openvino_available

    assert info["runtime"] in (("onnxruntime", "openvino") if openvino_available() else ("torch",))
    response = upload(client, png_bytes(scan_16bit(400, 320)), "scan16.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["detections"]) > 0
    for det in body["detections"]:
        x1, y1, x2, y2 = det["x1"], det["y1"], det["x2"], det["y2"]
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 400 and det["score"] >= 1e-4
        assert det["class_name"] in CLASS_NAMES
    scores = [d["score"] for d in body["detections"]]
    assert scores == sorted(scores, reverse=True)
