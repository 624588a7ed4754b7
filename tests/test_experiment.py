import json
import textwrap

import pytest

from rarespot.errors import InputError
from rarespot.experiment.plan import load_plan
from rarespot.experiment.report import aggregate, write_report
from rarespot.experiment.runner import read_results, run_plan

PLAN = textwrap.dedent(
    """
    name: toy
    data: {synth: {n: 4}}
    base: {tiles: 4, tile_size: 512, epochs: 50}
    budget: {epochs: 2, imgsz: 256}
    seeds: [0, 1, 2]
    studies:
      - name: tiling
        form: tiling
        cells:
          - {label: full image, set: {full_image: true}}
          - {label: 4 x 512, set: {tiles: 4, tile_size: 512}}
      - name: peers
        form: peers
        cells:
          - {label: SAHI, inference: sahi, model_from: "tiling/4 x 512"}
    """
)


def _plan(tmp_path, text=PLAN):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return load_plan(path)


def test_config_layers_base_budget_cell_seed(tmp_path):
    plan = _plan(tmp_path)
    study, cell = plan.cell("tiling/full image")
    cfg = plan.config_for(cell, 2)
    assert cfg == {"tiles": 4, "tile_size": 512, "epochs": 2, "imgsz": 256, "full_image": True, "seed": 2}
    assert len(plan.runs()) == 9


def test_runner_is_resumable_and_reuses_models(tmp_path):
    plan = _plan(tmp_path)
    calls = []

    def fake(job):
        calls.append((job.study.name, job.cell.slug, job.seed))
        if job.cell.model_from:
            # the model cell ran before and its folder is handed over
            assert (job.model_from_dir / "model.txt").read_text() == "trained"
        else:
            (job.run_dir / "model.txt").write_text("trained")
        f1 = 0.5 if job.config.get("full_image") else 0.7
        if job.study.name == "tiling" and job.cell.slug == "full-image" and job.seed == 1 and len(calls) < 5:
            raise RuntimeError("out of memory")
        return {"precision": f1 + 0.1, "recall": f1 - 0.1, "f1": f1 + 0.01 * job.seed, "map50": 0.4}

    out = tmp_path / "study"
    csv = run_plan(plan, out, fake)
    rows = read_results(csv)
    assert len(rows) == 9
    assert [r["status"] for r in rows].count("failed") == 1
    # each reusing run follows its model's run at once (a stop never strands a trained model)
    assert calls[-6:] == [("tiling", "4-x-512", 0), ("peers", "sahi", 0), ("tiling", "4-x-512", 1),
                          ("peers", "sahi", 1), ("tiling", "4-x-512", 2), ("peers", "sahi", 2)]
    # a second call runs nothing; retry_failed re-runs just the failed one
    n = len(calls)
    run_plan(plan, out, fake)
    assert len(calls) == n
    run_plan(plan, out, fake, retry_failed=True)
    assert calls[n:] == [("tiling", "full-image", 1)]
    rows = read_results(csv)
    assert len(rows) == 9 and all(r["status"] == "done" for r in rows)
    # run folders are recorded relative to the study folder, so results.csv survives the folder being moved
    assert {r["run_dir"] for r in rows if r["cell"] == "sahi"} == {f"runs/peers/sahi/seed{s}" for s in (0, 1, 2)}
    assert all((out / r["run_dir"]).is_dir() for r in rows)
    agg = aggregate(plan, csv)
    mean, std, n = agg[("tiling", "4-x-512")]["f1"]
    assert mean == pytest.approx(0.71) and std == pytest.approx(0.01) and n == 3
    md = write_report(plan, out).read_text()
    assert "| no tile | full image | 0.600 ± 0.000 | 0.400 ± 0.000 | 0.510 ± 0.010 | 0.400 ± 0.000 | 3 |" in md
    assert (out / "tiling.png").stat().st_size > 1000


def test_running_some_studies_keeps_model_from_cells_of_the_others_resolvable(tmp_path):
    """`--study peers` after `--study tiling`: the SAHI cell still finds the tiling cell's model."""
    plan = _plan(tmp_path)
    calls = []

    def fake(job):
        calls.append((job.study.name, job.cell.slug, job.seed))
        if job.cell.model_from:
            assert job.model_from_dir.name == f"seed{job.seed}" and job.model_from_dir.parent.name == "4-x-512"
        return {"precision": 0.5, "recall": 0.5, "f1": 0.5, "map50": 0.5}

    out = tmp_path / "study"
    run_plan(plan, out, fake, studies=["tiling"])
    assert {c[0] for c in calls} == {"tiling"} and len(calls) == 6
    run_plan(plan, out, fake, studies=["peers"])
    assert calls[6:] == [("peers", "sahi", 0), ("peers", "sahi", 1), ("peers", "sahi", 2)]
    assert all(r["status"] == "done" for r in read_results(out / "results.csv"))


def test_reusing_run_waits_for_its_source_and_fails_clearly_when_it_never_comes(tmp_path):
    """Two runners on one folder: a reusing run whose model is not trained yet goes to the end of the
    queue, and is recorded as failed with the reason (not run on a missing model) if it is still missing."""
    plan = _plan(tmp_path)
    out = tmp_path / "study"
    calls = []

    def fake(job):
        calls.append((job.study.name, job.cell.slug, job.seed))
        return {"precision": 0.5, "recall": 0.5, "f1": 0.5, "map50": 0.5}

    run_plan(plan, out, fake, studies=["peers"])
    rows = read_results(out / "results.csv")
    assert calls == [] and len(rows) == 3 and {r["status"] for r in rows} == {"failed"}
    assert "tiling/4 x 512 seed 0, is not trained" in rows[0]["error"]
    run_plan(plan, out, fake, studies=["tiling"])
    run_plan(plan, out, fake, studies=["peers"], retry_failed=True)
    assert calls[-3:] == [("peers", "sahi", 0), ("peers", "sahi", 1), ("peers", "sahi", 2)]
    assert all(r["status"] == "done" for r in read_results(out / "results.csv"))


def test_interrupted_run_restarts_clean(tmp_path):
    plan = _plan(tmp_path)
    out = tmp_path / "study"
    stale = out / "runs" / "tiling" / "full-image" / "seed0"
    stale.mkdir(parents=True)
    (stale / "half-written.pt").write_text("x")
    seen = []

    def fake(job):
        seen.append(sorted(p.name for p in job.run_dir.iterdir()))
        (job.run_dir / "model.txt").write_text("trained")
        return {"precision": 1, "recall": 1, "f1": 1, "map50": 1}

    run_plan(plan, out, fake)
    assert seen[0] == []  # the stale partial checkpoint was wiped


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name: x\n", "invalid plan"),
        ("[1, 2]", "must be a YAML mapping"),
        ("name: x\ndata: {}\nstudies: [{name: a, cells: [{label: b, model_from: nope/c}]}]\n", "names no cell"),
        ("name: x\ndata: {}\nseeds: []\nstudies: []\n", "at least one seed"),
    ],
)
def test_bad_plans_name_the_file(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_plan(path)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.slow
def test_detection_plan_end_to_end_on_tiny_synthetic_scans(tmp_path):
    """A real (tiny) plan: synthetic scans -> train -> val-calibrated tiled and
    full-image evaluation -> a reused-model cell -> results.csv and report."""
    from rarespot.experiment.detection import run_detection_cell

    plan = _plan(
        tmp_path,
        textwrap.dedent(
            """
            name: tiny
            data: {synth: {n: 10, seed: 3, size: [300, 240]}}
            base: {model: yolo11n, tiles: 2, tile_size: 128, remap: agnostic, batch: 4, nbs: 4, val_every: 1, workers: 0}
            budget: {epochs: 1, imgsz: 128, device: cpu}
            evaluation: {class_recall_floor: 0.5}
            seeds: [0]
            studies:
              - name: tiling
                form: tiling
                cells:
                  - {label: full image, set: {full_image: true, imgsz: 128}, inference: full}
                  - {label: 2 x 128, set: {}}
              - name: peers
                cells:
                  - {label: reuse, model_from: "tiling/2 x 128"}
            """
        ),
    )
    out = tmp_path / "study"
    rows = read_results(run_plan(plan, out, run_detection_cell))
    assert [r["status"] for r in rows] == ["done"] * 3, [r.get("error") for r in rows]
    for row in rows:
        for key in ("precision", "recall", "f1", "map50", "floor_f1"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["floor_conf"]) <= float(row["conf"])  # the screening floor only ever lowers it
        assert set(json.loads(row["floor_class_recall"])) == {"object"}
    assert (out / "runs" / "tiling" / "2-x-128" / "seed0" / "train" / "weights" / "best.pt").exists()
    assert (out / "runs" / "peers" / "reuse" / "seed0" / "test_eval_floor" / "metrics.json").exists()
    report = write_report(plan, out).read_text()
    assert "| 2 | 128 |" in report and "keeping every class's validation recall at 0.5" in report


def test_cached_splits_are_refused_when_the_plan_data_changes(tmp_path):
    from rarespot.experiment.detection import prepare_splits

    text = PLAN.replace("data: {synth: {n: 4}}", "data: {synth: {n: 6, seed: 1, size: [200, 160]}}")
    plan = _plan(tmp_path, text)
    out = tmp_path / "study"
    first = prepare_splits(plan, out)
    assert sum(len(ds) for ds in first.values()) == 6
    again = prepare_splits(plan, out)  # same plan: the cached splits come back
    assert [r.path.name for r in again["test"].records] == [r.path.name for r in first["test"].records]
    plan.budget.images = 2
    with pytest.raises(InputError) as err:
        prepare_splits(plan, out)
    assert str(out / "data" / "split.json") in str(err.value)


@pytest.mark.parametrize("name", ["synthetic", "synthetic-cpu", "opixray", "opixray-longtail", "opixray-screening"])
def test_packaged_plans_load_and_every_run_is_a_valid_training_config(name, tmp_path):
    from rarespot.detect.config import load_config
    from rarespot.experiment.cli import plan_path

    plan = load_plan(plan_path(name))
    assert len(plan.seeds) >= 3  # the minimum per cell
    for _study, cell, seed in plan.runs():
        settings = plan.config_for(cell, seed)
        if str(settings.get("remap", "")).startswith("score:@"):
            settings["remap"] = None  # resolved from another cell's validation F1 at run time
        load_config(None, **settings, out=tmp_path / "run", exist_ok=True)


def test_plain_ultralytics_peer_and_holdout_on_tiny_synthetic_scans(tmp_path):
    """The peer is Ultralytics' own trainer (its run folder and args.yaml prove it), scored by
    rarespot's evaluator on whole images; the holdout never reaches the study's splits."""
    import json

    import yaml

    from rarespot.experiment.detection import prepare_splits, run_detection_cell

    plan = _plan(
        tmp_path,
        textwrap.dedent(
            """
            name: tinypeer
            data: {synth: {n: 20, seed: 3, size: [300, 240]}, holdout: {share: 0.2, seed: 0}}
            base: {model: yolo11n, tiles: 2, tile_size: 128, remap: agnostic, batch: 4, nbs: 4, val_every: 1}
            budget: {epochs: 1, device: cpu, val_images: 2}
            seeds: [0]
            studies:
              - name: peers
                form: peers
                cells:
                  - {label: Ultralytics defaults, trainer: ultralytics, set: {full_image: true, imgsz: 128, batch: 4}}
            """
        ),
    )
    out = tmp_path / "study"
    splits = prepare_splits(plan, out)
    from rarespot.io.annotations import load_dataset
    from rarespot.io.split import carve_holdout

    _, holdout = carve_holdout(load_dataset(out / "data" / "scans"), 0.2, 0)
    used = {r.path.name for ds in splits.values() for r in ds.records}
    assert len(holdout) >= 4 and not used & {r.path.name for r in holdout.records}
    assert len(splits["val"]) == 2  # the val_images budget
    rows = read_results(run_plan(plan, out, run_detection_cell))
    assert [r["status"] for r in rows] == ["done"], [r.get("error") for r in rows]
    run = out / "runs" / "peers" / "ultralytics-defaults" / "seed0"
    args = yaml.safe_load((run / "train" / "args.yaml").read_text())
    assert args["optimizer"] == "auto" and args["mosaic"] == 1.0 and args["val"] is False  # Ultralytics' defaults
    assert (run / "train" / "weights" / "last.pt").exists()
    assert json.loads((run / "test_eval" / "metrics.json").read_text())["num_images"] == len(splits["test"])
    assert set(json.loads(rows[0]["class_recall"])) == {"object"}
    assert rows[0]["f1_mean_class"] != ""


def test_report_gives_no_spread_for_one_seed():
    """One seed has no standard deviation: the table shows the mean alone, not "± 0.000"."""
    import numpy as np

    from rarespot.experiment.report import _fmt, _stat

    assert _fmt(_stat(np.array([0.4]))) == "0.400"
    assert _fmt(_stat(np.array([0.4, 0.5]))) == "0.450 ± 0.071"
    assert _fmt(None) == "—"
