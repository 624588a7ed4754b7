"""A quick load test on loopback: parallel uploads to a real server, none may fail.

The full run (8 clients, 40 uploads of a 1500x1216 16-bit scan) is
bench/bench_serve_load.py; results in docs/benchmarks/serve.md.
"""

from __future__ import annotations

from rarespot.serve.app import create_app, serve_in_background
from rarespot.serve.loadtest import run_load
from rarespot.serve.settings import ServeSettings
from serve_fixtures import png_bytes, scan_16bit, tiny_yolo


def test_parallel_uploads_to_a_real_model_all_succeed(tmp_path):
    import torch

    torch.set_num_threads(2)
    model = tiny_yolo(tmp_path / "tiny.pt")
    app = create_app(model, ServeSettings(tile=256, overlap=0.1, floor_conf=1e-4, batch=4, backend="torch"))
    data = png_bytes(scan_16bit(256, 256))  # one 256 px tile per upload: seconds, not minutes
    with serve_in_background(app) as url:
        result = run_load(url, data, "scan16.png", clients=3, requests=6, time_limit_s=120)
    assert result.failures == []
    assert result.ok == 6 and result.not_started == 0
    assert 0 < result.percentile_s(50) <= result.percentile_s(95) < 120
    assert len(result.model_s) == 6 and all(0 < m <= lat for m, lat in zip(result.model_s, result.latencies_s))
    assert 0 < result.model_busy_fraction <= 1.01


def test_load_failures_are_counted_not_raised(tmp_path):
    """The load runner reports refused uploads (here: not an image) as failures with their message."""
    from serve_fixtures import FakePredictor

    with serve_in_background(create_app(FakePredictor())) as url:
        result = run_load(url, b"not an image", "junk.png", clients=2, requests=4, time_limit_s=30)
    assert result.ok == 0 and len(result.failures) == 4
    assert all(f.startswith("415: ") and "junk.png" in f for f in result.failures)
