"""`--ray` is optional: without it nothing imports Ray; its option parsing and its errors (no Ray,
a dead address, a stray --workers) are clear. These tests need no Ray cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

from helpers_ray import REPO, TESTS, free_port
from rarespot.cli import app
from rarespot.errors import RarespotError
from rarespot.ray_backend import RaySettings, check_answers, expand_bare_ray_option, require_ray

runner = CliRunner()


def test_without_ray_option_nothing_imports_ray(tmp_path):
    """Every module with a --ray path is imported and a local screening runs: Ray stays unimported."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]
        import numpy as np
        from typer.testing import CliRunner
        import rarespot.cli, rarespot.ray_backend, rarespot.detect.screen_batch, rarespot.screen.pipeline
        import rarespot.experiment.runner, rarespot.experiment.cli
        from rarespot.detect.screen_batch import screen_folder
        from rarespot.io.images import write_image
        from helpers_ray import BrightnessPredictor

        src = {str(tmp_path / "scans")!r}
        write_image(src + "/a.png", np.full((40, 30), 60000, np.uint16))
        result = screen_folder(src, BrightnessPredictor(), {str(tmp_path / "out")!r}, progress=False)
        assert result.n_scans == 1 and result.n_flagged == 1
        for args in (["detect", "batch", "--help"], ["screen", "score", "--help"], ["experiment", "--help"]):
            out = CliRunner().invoke(rarespot.cli.app, args)
            assert out.exit_code == 0 and "--ray" in out.output, out.output
        print("ray imported:", "ray" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray imported: False" in done.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["experiment", "--ray", "plan.yaml"], ["experiment", "--ray=", "plan.yaml"]),
        (["detect", "batch", "s", "--ray"], ["detect", "batch", "s", "--ray="]),
        (["detect", "batch", "s", "--ray", "--workers", "2"], ["detect", "batch", "s", "--ray=", "--workers", "2"]),
        (["screen", "score", "m", "d", "--ray", "auto"], ["screen", "score", "m", "d", "--ray", "auto"]),
        (["x", "--ray", "ray://head:10001", "y"], ["x", "--ray", "ray://head:10001", "y"]),
        (["x", "--ray", "10.0.0.5:6379"], ["x", "--ray", "10.0.0.5:6379"]),
        (["x", "--ray=auto"], ["x", "--ray=auto"]),
    ],
)
def test_a_bare_ray_option_gets_an_empty_address(args, expected):
    assert expand_bare_ray_option(args) == expected


def test_workers_without_ray_is_refused(tmp_path):
    result = runner.invoke(app, ["screen", "score", str(tmp_path / "m"), str(tmp_path / "d"), "--workers", "2"])
    assert result.exit_code != 0
    assert "--workers applies to --ray runs" in str(result.exception) + result.output


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as on a plain install
    with pytest.raises(RarespotError, match=r"pip install 'rarespot\[ray\]'"):
        require_ray()


def test_an_address_that_does_not_answer_fails_fast_naming_it():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RarespotError, match=rf"no Ray cluster answers at {address}"):
            check_answers(address)
    assert time.monotonic() - started < 10
    with pytest.raises(RarespotError, match="not a cluster address"):
        check_answers("somewhere")
    with pytest.raises(RarespotError, match="--workers must be at least 1"):
        RaySettings(workers=0)


def test_cli_with_a_dead_address_exits_with_one_line(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'rarespot[ray]'")
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        proc = subprocess.run(
            [sys.executable, "-m", "rarespot", "experiment", "synthetic-cpu", "--out", str(tmp_path / "s"),
             "--ray", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr
