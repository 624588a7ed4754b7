"""Pieces the Ray tests send to Ray workers: they import this module by name (the tests put tests/ on
the workers' PYTHONPATH), so everything here pickles by reference and has no test-local state."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def worker_pythonpath() -> str:
    """What Ray workers need on their path: this checkout's rarespot and these helpers."""
    extra = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(TESTS), str(REPO)] + ([extra] if extra else []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrightnessPredictor:
    """One box per scan scored 0.9 x (brightest value / dtype max): bright scans are flagged, dim ones not.
    Picklable (no lock), unlike serve_fixtures.FakePredictor, so it can be sent to Ray workers."""

    class_names = ["knife", "gun"]

    def predict(self, image):
        from serve_fixtures import FakeDetections

        h, w = image.shape[:2]
        top = np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1.0
        boxes = np.array([[0.1 * w, 0.1 * h, 0.3 * w, 0.3 * h]], dtype=np.float64)
        return FakeDetections(boxes, np.array([0.9 * float(image.max()) / top]), np.array([0]))


class DyingWorker:
    """A WorkerPool worker that doubles numbers, and whose process dies (once) on the block holding ``die_on``."""

    def __init__(self, spec: dict, shipped):
        self.spec, self.shipped = spec, shipped

    def setup(self) -> dict:
        return {}

    def run(self, block: list[int]) -> list[int]:
        flag = Path(self.spec["flag"])
        if self.spec["die_on"] in block and not flag.exists():
            flag.write_text(str(os.getpid()))
            os._exit(1)  # a worker lost mid-block (a killed process, a lost node)
        return [x * self.shipped for x in block]


class ChoosingWorker:
    """A WorkerPool worker that settles a setting of its own (its process id, standing for the back-end it
    timed as faster) unless the spec names one; run() tells which setting it works with."""

    def __init__(self, spec: dict, shipped):
        self.spec = spec

    def setup(self) -> dict:
        return {} if "choice" in self.spec else {"pin": {"choice": os.getpid()}}

    def run(self, block):
        return self.spec.get("choice", os.getpid())


def fake_run(job) -> dict:
    """The experiment tests' run function: records its call, 'trains' by writing model.txt (a reusing run first
    reads its source's), fails where the cell says ``fail_seed``, and gives fixed metrics."""
    with open(job.out_dir / "calls.log", "a") as fh:
        fh.write(f"{job.study.name}/{job.cell.slug}/{job.seed}\n")
    if job.model_from_dir is not None and (job.model_from_dir / "model.txt").read_text() != "trained":
        raise RuntimeError("the reused model is missing")
    (job.run_dir / "model.txt").write_text("trained")  # a reusing run passes the model on
    if job.config.get("fail_seed") == job.seed:
        raise RuntimeError("out of memory")
    f1 = 0.5 if job.config.get("full_image") else 0.7
    return {"precision": f1 + 0.1, "recall": f1 - 0.1, "f1": f1 + 0.01 * job.seed, "map50": 0.4, "train_seconds": 1.5}


class RayHead:
    """A Ray head node started with ``ray start --head --block`` (the test's own cluster), and stopped by
    ending that process (and, if anything is left, its process group): nothing else is touched.

    It listens where Ray dials "127.0.0.1": Ray replaces a loopback address by the node's outward IP
    when the machine has a network route (``resolve_ip_for_localhost``), and loopback otherwise, so a
    head bound to loopback alone cannot be joined on a networked machine."""

    def __init__(self, num_cpus: int = 2):
        from ray._private.services import resolve_ip_for_localhost

        self.host = resolve_ip_for_localhost("127.0.0.1")
        self.port, self.client_port = free_port(), free_port()
        self.temp_dir = tempfile.mkdtemp(prefix="rsray")  # short: Ray's socket paths have a length limit
        env = {**os.environ, "PYTHONPATH": worker_pythonpath()}
        env.pop("RAY_ADDRESS", None)
        beside = Path(sys.executable).with_name("ray")  # the ray of this Python's environment
        ray_cli = str(beside) if beside.exists() else (shutil.which("ray") or "ray")
        self.proc = subprocess.Popen(
            [ray_cli, "start", "--head", "--block", "--node-ip-address", self.host, "--port", str(self.port),
             "--ray-client-server-port", str(self.client_port), "--num-cpus", str(num_cpus), "--num-gpus", "0",
             "--include-dashboard", "false", "--temp-dir", self.temp_dir, "--disable-usage-stats"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        self._wait_for(self.port)
        self._wait_for(self.client_port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://{self.host}:{self.client_port}"

    def _wait_for(self, port: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited ({self.proc.returncode}): {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection((self.host, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Ray head did not open port {port} in {timeout:.0f} s")

    def client_server_logs(self, chars: int = 3000) -> str:
        """The end of each Ray Client server's stderr under this head's temp dir: why a ray:// connection
        failed (the proxy only says "see ray_client_server_PORT.err", and stop() deletes the folder)."""
        parts = [f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                 for p in sorted(Path(self.temp_dir).glob("session_*/logs/ray_client_server*.err"))]
        return "\n".join(parts) or f"(no ray_client_server*.err under {self.temp_dir})"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the node's processes on SIGTERM
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started, if anything is left in it
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def fit_tiny_cae(folder: Path) -> Path:
    """A tiny screening autoencoder fitted on generated cells (about two seconds); returns ``folder``
    with cells.npz (80 cells, 20 with a dark spot) and model/."""
    import torch
    import yaml
    from typer.testing import CliRunner

    from helpers_screen import TINY, make_cells
    from rarespot.cli import app

    torch.set_num_threads(1)
    images = np.concatenate([make_cells(60, 0), make_cells(20, 1, spots=True)])
    np.savez(folder / "cells.npz", images=images, labels=np.r_[np.zeros(60), np.ones(20)].astype(np.uint8))
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(app, ["screen", "fit", str(folder / "cells.npz"), "--out", str(folder / "model"), "-c",
                                      str(folder / "tiny.yaml"), "--seed", "0"])
    assert result.exit_code == 0, result.output
    return folder
