"""`--ray` on a real (local, in-process) Ray: `ray.init(num_cpus=2)` started by the tests.

Each path is run twice, locally and on Ray, on data the tests make; the outputs must be the same,
byte for byte: screening CSV, boxes, thumbnails and contact sheet; anomaly scores; a study's rows and
report. Also: resume, unreadable files, a worker that dies mid-block, failed and dependent runs.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'rarespot[ray]'")

from helpers_ray import BrightnessPredictor, ChoosingWorker, DyingWorker, fake_run, fit_tiny_cae, worker_pythonpath  # noqa: E402
from helpers_screen import make_cells  # noqa: E402
from serve_fixtures import corrupt_png, scan_16bit, tiny_yolo  # noqa: E402

from rarespot.detect.screen_batch import screen_folder  # noqa: E402
from rarespot.errors import InputError  # noqa: E402
from rarespot.io.images import write_image  # noqa: E402
from rarespot.ray_backend import RaySettings, WorkerPool, connected  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs); its workers import this checkout and tests/helpers_ray."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_ADDRESS")}
    os.environ["PYTHONPATH"] = worker_pythonpath()  # the workers inherit the environment of ray.init
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RARESPOT_CACHE_DIR", str(tmp_path / "cache"))


def make_scans(root: Path, n: int = 9) -> Path:
    """n scans of falling brightness (some flagged, some not), in two folders, plus unreadable files:
    a corrupt PNG, one cut short (still being copied), and a missing one named in a list file."""
    src = root / "scans"
    (src / "day2").mkdir(parents=True)
    for i in range(n):
        folder = src / "day2" if i % 3 == 2 else src
        write_image(folder / f"s{i:02d}.png", scan_16bit(90 + 7 * i, 80, peak=65535 - 6000 * i, seed=i))
    (src / "bad_crc.png").write_bytes(corrupt_png())
    whole = (src / "s00.png").read_bytes()
    (src / "copying.png").write_bytes(whole[: len(whole) // 2])
    return src


def outputs(out: Path) -> dict[str, bytes]:
    """Every file a screening wrote, by relative path (screen.json names the run's settings, not results)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "screen.json"}


# ------------------------------------------------------------------------------------- detect batch


def test_screening_on_ray_writes_what_a_local_run_writes(local_ray, tmp_path):
    src = make_scans(tmp_path)
    listing = tmp_path / "tonight.txt"  # a list file: also a scan that is not there
    listing.write_text("".join(f"scans/{p.relative_to(src).as_posix()}\n" for p in sorted(src.rglob("*.png")))
                       + "scans/missing.png\n")
    local = screen_folder(listing, BrightnessPredictor(), tmp_path / "local", progress=False)
    on_ray = screen_folder(listing, BrightnessPredictor(), tmp_path / "ray", progress=False,
                           ray=RaySettings(workers=2, block_size=2))
    assert (on_ray.n_scans, on_ray.n_flagged, on_ray.n_errors) == (local.n_scans, local.n_flagged, local.n_errors)
    assert local.n_scans == 12 and local.n_errors == 3 and 0 < local.n_flagged < 9
    a, b = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert sorted(a) == sorted(b) and len([k for k in a if k.startswith("thumbs/")]) == local.n_flagged
    for name in a:
        assert a[name] == b[name], name  # CSV, JSONL, thumbnails and contact sheet, byte for byte
    rows = (tmp_path / "ray" / "screen.csv").read_text().splitlines()
    assert "missing.png,0,,0,image file not found" in rows[-1]
    assert any("libpng error" in r for r in rows) and any("truncated PNG" in r for r in rows)
    # --shared-disk: the workers read the scans at their paths instead of being sent them; the same outputs
    screen_folder(listing, BrightnessPredictor(), tmp_path / "shared", progress=False,
                  ray=RaySettings(workers=2, block_size=3, shared_disk=True))
    assert outputs(tmp_path / "shared") == a


def test_screening_on_ray_resumes_where_a_run_stopped(local_ray, tmp_path):
    src = make_scans(tmp_path, n=6)
    screen_folder(src, BrightnessPredictor(), tmp_path / "local", progress=False)
    # A run that stopped after 3 scans (and was cut in the middle of the 4th row), resumed on Ray.
    out = tmp_path / "ray"
    out.mkdir()
    lines = (tmp_path / "local" / "screen.csv").read_bytes().decode().splitlines(keepends=True)  # rows end in \r\n
    (out / "screen.csv").write_bytes(("".join(lines[:4]) + lines[4][:7]).encode())
    result = screen_folder(src, BrightnessPredictor(), out, progress=False, ray=RaySettings(workers=2, block_size=1))
    assert (result.n_skipped, result.n_screened, result.n_scans) == (3, 5, 8)
    a, b = outputs(tmp_path / "local"), outputs(out)
    assert a["screen.csv"] == b["screen.csv"] and a["contact_sheet.html"] == b["contact_sheet.html"]
    # the JSONL of the first run's scans was never written here: only the resumed scans' boxes are
    resumed = {line.split('"')[3] for line in b["detections.jsonl"].decode().splitlines()}
    assert resumed == {r.split(",")[0] for r in lines[4:] if ",0,,0," not in r}
    again = screen_folder(src, BrightnessPredictor(), out, progress=False, ray=RaySettings(workers=2))
    assert again.n_screened == 0 and again.n_skipped == 8


def test_a_real_model_on_ray_gives_the_local_boxes(local_ray, tmp_path):
    """A tiny untrained YOLO exported to ONNX, on onnxruntime: the same boxes (JSONL) and rows as locally."""
    from rarespot.detect.export import cached_onnx

    onnx = cached_onnx(tiny_yolo(tmp_path / "tiny.pt"), 256)
    src = tmp_path / "scans"
    src.mkdir()
    for i in range(4):
        write_image(src / f"s{i}.png", scan_16bit(256, 200, seed=i))
    options = dict(conf=1e-4, flag_conf=1e-4, tile=256, backend="onnxruntime", threads=1, progress=False)
    screen_folder(src, onnx, tmp_path / "local", **options)
    screen_folder(src, onnx, tmp_path / "ray", ray=RaySettings(workers=2), **options)
    a, b = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert len(a["detections.jsonl"].splitlines()) == 4
    assert a == b

    from typer.testing import CliRunner

    from rarespot.cli import app

    result = CliRunner().invoke(app, ["detect", "batch", str(src), "--model", str(onnx), "--out", str(tmp_path / "cli"),
                                      "--conf", "0.0001", "--flag-conf", "0.0001", "--tile", "256", "--backend",
                                      "onnxruntime", "--threads", "1", "--ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 scans (0 from an earlier run), 4 flagged, 0 unreadable" in " ".join(result.output.split())
    assert outputs(tmp_path / "cli") == a


def test_a_model_that_does_not_load_names_the_problem(local_ray, tmp_path):
    src = make_scans(tmp_path, n=2)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(InputError, match=rf"{broken}: "):
        screen_folder(src, broken, tmp_path / "out", backend="onnxruntime", progress=False, ray=RaySettings(workers=1))
    with pytest.raises(InputError, match="gone.onnx: model file not found"):
        screen_folder(src, tmp_path / "gone.onnx", tmp_path / "out2", progress=False, ray=RaySettings())


def test_a_worker_that_dies_mid_block_has_its_block_redone(local_ray, tmp_path):
    spec = {"die_on": 7, "flag": str(tmp_path / "died")}
    blocks = [[i, i + 1] for i in range(0, 20, 2)]
    with connected(RaySettings()) as r, WorkerPool(r, DyingWorker, spec, shipped=3, size=2) as pool:
        results = list(pool.map(blocks))
        assert pool.deaths == 1
    assert (tmp_path / "died").exists()  # it did die
    assert results == [[3 * i, 3 * (i + 1)] for i in range(0, 20, 2)]  # nothing lost, nothing twice, in order


def test_what_one_worker_settles_holds_for_every_worker(local_ray):
    """`--backend auto` is timed on each worker: the first choice is every worker's, so a scan's boxes do
    not depend on which worker screened it."""
    with connected(RaySettings()) as r, WorkerPool(r, ChoosingWorker, {}, size=2) as pool:
        choices = list(pool.map(range(8)))
        assert len(set(choices)) == 1 and pool.spec["choice"] == choices[0]


# ------------------------------------------------------------------------------------ screen score


@pytest.fixture(scope="module")
def cae_model(tmp_path_factory):
    return fit_tiny_cae(tmp_path_factory.mktemp("ray_screen"))


def test_scoring_on_ray_writes_the_local_csv(local_ray, cae_model, tmp_path):
    from typer.testing import CliRunner

    from rarespot.cli import app

    d = cae_model
    folder = tmp_path / "cells"  # a folder too: unreadable files are skipped and named the same way
    folder.mkdir()
    for i, image in enumerate(make_cells(7, 5)):
        write_image(folder / f"c{i}.png", image)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for data in (d / "cells.npz", folder):
        local = CliRunner().invoke(app, ["screen", "score", str(d / "model"), str(data), "-o", str(tmp_path / "l.csv")])
        on_ray = CliRunner().invoke(app, ["screen", "score", str(d / "model"), str(data), "-o", str(tmp_path / "r.csv"),
                                          "--ray", "--workers", "2"])
        assert local.exit_code == 0 and on_ray.exit_code == 0, (local.output, on_ray.output)
        assert (tmp_path / "l.csv").read_bytes() == (tmp_path / "r.csv").read_bytes()
        assert local.output.replace(str(tmp_path / "l.csv"), "X") == on_ray.output.replace(str(tmp_path / "r.csv"), "X")
    assert "skipped 1 unreadable file(s)" in on_ray.output


def test_scores_in_small_blocks_equal_one_batch(local_ray, cae_model):
    from rarespot.ray_backend import analyze_on_ray
    from rarespot.screen.detectors import load_detector

    images = np.load(cae_model / "cells.npz")["images"]
    here = load_detector(cae_model / "model").analyze(images)
    there = analyze_on_ray(cae_model / "model", images, RaySettings(workers=2, block_size=7), progress=False)
    np.testing.assert_array_equal(here.error, there.error)  # the network: bit for bit, whatever the block
    np.testing.assert_array_equal(here.or_rule, there.or_rule)
    for name in ("neg_log_density", "combined"):
        # the latent KDE's matrix products take other shapes in other blocks: equal to the last bit or two
        np.testing.assert_allclose(getattr(here, name), getattr(there, name), rtol=1e-13, atol=0, err_msg=name)


# ------------------------------------------------------------------------------------ experiment


PLAN = textwrap.dedent(
    """
    name: toy
    data: {synth: {n: 4}}
    base: {tiles: 4, tile_size: 512}
    budget: {epochs: 2}
    seeds: [0, 1, 2]
    resources: {cpus: 1}
    studies:
      - name: tiling
        form: tiling
        cells:
          - {label: full image, set: {full_image: true}}
          - {label: 4 x 512, set: {tiles: 4, tile_size: 512, fail_seed: 1}}
      - name: peers
        form: peers
        cells:
          - {label: SAHI, inference: sahi, model_from: "tiling/4 x 512"}
          - {label: again, model_from: "peers/SAHI"}
    """
)


def _rows(path: Path) -> list[tuple]:
    from rarespot.experiment.runner import read_results

    # run_dir names the study folder; train_seconds of a failed run is its clock time
    return sorted(tuple((k, v) for k, v in r.items() if k not in ("run_dir", "train_seconds")) for r in read_results(path))


def test_a_study_on_ray_gives_the_local_rows_and_report(local_ray, tmp_path):
    from rarespot.experiment.plan import load_plan
    from rarespot.experiment.report import write_report
    from rarespot.experiment.runner import read_results, run_plan
    from rarespot.ray_backend import run_plan_on_ray

    (tmp_path / "plan.yaml").write_text(PLAN)
    plan = load_plan(tmp_path / "plan.yaml")
    run_plan(plan, tmp_path / "local", fake_run)
    run_plan_on_ray(plan, tmp_path / "ray", fake_run, RaySettings())
    assert _rows(tmp_path / "local" / "results.csv") == _rows(tmp_path / "ray" / "results.csv")
    rows = {(r["study"], r["cell"], r["seed"]): r for r in read_results(tmp_path / "ray" / "results.csv")}
    assert len(rows) == 12
    assert rows[("tiling", "4-x-512", "1")]["error"] == "RuntimeError: out of memory"
    # its reusers (and theirs) never ran, and say why; the others ran after their source
    assert "tiling/4 x 512 seed 1, is not trained" in rows[("peers", "sahi", "1")]["error"]
    assert "peers/SAHI seed 1, is not trained" in rows[("peers", "again", "1")]["error"]
    assert sum(r["status"] == "done" for r in rows.values()) == 9
    calls = (tmp_path / "ray" / "calls.log").read_text().splitlines()
    assert sorted(calls) == sorted((tmp_path / "local" / "calls.log").read_text().splitlines()) and len(calls) == 10
    for seed in (0, 2):
        order = [c for c in calls if c.endswith(f"/{seed}")]
        assert order.index(f"tiling/4-x-512/{seed}") < order.index(f"peers/sahi/{seed}") < order.index(f"peers/again/{seed}")
    assert write_report(plan, tmp_path / "local").read_text() == write_report(plan, tmp_path / "ray").read_text()

    # resume: a second call runs nothing; --retry-failed runs the failed runs only (and fails the same way)
    run_plan_on_ray(plan, tmp_path / "ray", fake_run, RaySettings())
    assert len((tmp_path / "ray" / "calls.log").read_text().splitlines()) == 10
    run_plan_on_ray(plan, tmp_path / "ray", fake_run, RaySettings(), retry_failed=True)
    again = (tmp_path / "ray" / "calls.log").read_text().splitlines()[10:]
    assert again == ["tiling/4-x-512/1"]
    assert _rows(tmp_path / "ray" / "results.csv") == _rows(tmp_path / "local" / "results.csv")


def test_an_interrupted_study_on_ray_finishes_what_is_left(local_ray, tmp_path):
    from rarespot.experiment.plan import load_plan
    from rarespot.experiment.runner import read_results, run_plan
    from rarespot.ray_backend import run_plan_on_ray

    (tmp_path / "plan.yaml").write_text(PLAN.replace(", fail_seed: 1", ""))
    plan = load_plan(tmp_path / "plan.yaml")
    out = tmp_path / "study"
    run_plan(plan, out, fake_run, studies=["tiling"])  # the first part, as a stop would leave it
    stale = out / "runs" / "peers" / "sahi" / "seed0"
    stale.mkdir(parents=True)
    (stale / "half-written.pt").write_text("x")  # a run the stop cut short
    run_plan_on_ray(plan, out, fake_run, RaySettings())
    rows = read_results(out / "results.csv")
    assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
    calls = (out / "calls.log").read_text().splitlines()
    assert len(calls) == 12 and len(set(calls)) == 12  # nothing ran twice
    assert not (stale / "half-written.pt").exists()


def test_plan_resources_set_what_each_run_reserves(tmp_path):
    from rarespot.experiment.plan import load_plan
    from rarespot.ray_backend import resources_for

    (tmp_path / "plan.yaml").write_text(PLAN.replace("resources: {cpus: 1}", "budget: {threads: 2}").replace(
        "budget: {epochs: 2}\n", "").replace("{label: again,", "{label: again, resources: {gpus: 0.5},"))
    plan = load_plan(tmp_path / "plan.yaml")
    assert resources_for(plan, plan.cell("tiling/full image")[1], 0) == (2.0, 0.0)
    assert resources_for(plan, plan.cell("peers/again")[1], 0) == (2.0, 0.5)
    plan.budget.device = "0,1"
    assert resources_for(plan, plan.cell("tiling/full image")[1], 0) == (2.0, 2.0)
