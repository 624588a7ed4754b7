"""Run every (study, cell, seed) of a plan, resumably, into one results CSV.

The runner knows nothing about detection: it calls a ``run_fn`` for each run
(``rarespot.experiment.detection.run_detection_cell`` in practice; a fake in
the tests). A run is finished when its row is in ``results.csv``; a run folder
without a row was interrupted and is wiped and started again, so a half-written
checkpoint never leaks into the numbers.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

from rarespot.experiment.plan import Cell, Plan, Study
from rarespot.io.atomic import atomic_write_text
from rarespot.progress import ProgressBar

METRICS = ["precision", "recall", "f1", "map50", "map50_95"]
COLUMNS = ["study", "cell", "seed", "status", *METRICS, "f1_mean_class", "conf", "train_seconds", "class_recall",
           "run_dir", "error",
           # at the screening point, when the plan's evaluation sets class_recall_floor
           "floor_conf", "floor_f1", "floor_f1_mean_class", "floor_class_recall"]


@dataclass
class CellRun:
    """Everything one run needs; ``model_from_dir`` is set for cells that reuse a model."""

    plan: Plan
    study: Study
    cell: Cell
    seed: int
    config: dict[str, Any]
    run_dir: Path
    model_from_dir: Path | None = None

    @property
    def out_dir(self) -> Path:
        """The study folder (``run_dir`` is ``run_dir_for(out_dir, ...)``)."""
        return self.run_dir.parents[3]


RunFn = Callable[[CellRun], dict[str, Any]]


def run_dir_for(out_dir: Path, study: Study, cell: Cell, seed: int) -> Path:
    """Where one run writes: ``out_dir/runs/<study>/<cell slug>/seed<seed>``."""
    return Path(out_dir) / study_relative_run_dir(study, cell, seed)


def study_relative_run_dir(study: Study, cell: Cell, seed: int) -> Path:
    """A run's folder relative to the study folder: the ``run_dir`` column of ``results.csv``, so that the
    file still points at the runs when the study folder is moved or copied (e.g. into a repository)."""
    return Path("runs") / study.name / cell.slug / f"seed{seed}"


def run_key(study: str, cell: str, seed: int | str) -> tuple[str, str, str]:
    return (study, cell, str(seed))


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic rewrite: a crash mid-write never leaves a truncated CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def append_result(path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add one run's row under a file lock, re-reading the CSV first.

    Two runners may share one study folder when they run disjoint studies (one per core):
    each only ever adds its own rows, so neither loses the other's. A row for the same
    (study, cell, seed) replaces the older one (a failed run that was retried).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = run_key(row["study"], row["cell"], row["seed"])
        rows: list[dict[str, Any]] = [r for r in read_results(path) if run_key(r["study"], r["cell"], r["seed"]) != key]
        rows.append(row)
        write_results(path, rows)
    return rows


def _ordered_runs(plan: Plan) -> list[tuple[Study, Cell, int]]:
    """Training runs in plan order, each followed at once by the runs that reuse its model.

    A study spans sessions on a CPU: scoring the reusing cells while the model is fresh
    means a stop loses at most the run in progress, never a trained model's evaluations.
    """
    runs = plan.runs()
    reusing: dict[tuple[str, str, int], list[tuple[Study, Cell, int]]] = {}
    for study, cell, seed in runs:
        if cell.model_from:
            source_study, source_cell = plan.cell(cell.model_from)
            reusing.setdefault((source_study.name, source_cell.slug, seed), []).append((study, cell, seed))
    ordered = []
    for study, cell, seed in runs:
        if not cell.model_from:
            ordered.append((study, cell, seed))
            ordered.extend(reusing.pop((study.name, cell.slug, seed), []))
    return ordered + [r for group in reusing.values() for r in group]  # reuse of reuse: last


def pending_runs(
    plan: Plan, out_dir: Path, retry_failed: bool = False, studies: Collection[str] | None = None
) -> tuple[Path, list[tuple[Study, Cell, int]], list[tuple[Study, Cell, int]]]:
    """(results CSV, the runs still to do in run order, the runs planned) of ``studies`` (all if None)."""
    results_path = Path(out_dir) / "results.csv"
    rows = read_results(results_path)
    if retry_failed:
        rows = [r for r in rows if r.get("status") == "done"]
    done = {run_key(r["study"], r["cell"], r["seed"]) for r in rows}
    todo = [(s, c, seed) for s, c, seed in _ordered_runs(plan)
            if run_key(s.name, c.slug, seed) not in done and (studies is None or s.name in studies)]
    planned = [r for r in plan.runs() if studies is None or r[0].name in studies]
    return results_path, todo, planned


def finished_keys(results_path: Path) -> set[tuple[str, str, str]]:
    """Keys of the runs with a ``done`` row (re-read: another runner may share the folder)."""
    return {run_key(r["study"], r["cell"], r["seed"]) for r in read_results(results_path) if r.get("status") == "done"}


def run_sources(plan: Plan, cell: Cell) -> list[tuple[Study, Cell]]:
    """The cells whose run (of the same seed) this cell's run reads: the model it reuses (``model_from``)
    and the evaluation a ``score:@study/label`` remap takes its class scores from."""
    refs = [cell.model_from] if cell.model_from else []
    for value in cell.set.values():
        if isinstance(value, str) and value.startswith("score:@"):
            refs.append(value[len("score:@"):])
    out = []
    for ref in refs:
        try:
            out.append(plan.cell(ref))
        except KeyError:
            pass  # the run itself says what is wrong with it
    return out


def not_trained_message(cell: Cell, seed: int) -> str:
    return (f"the model it reuses, {cell.model_from} seed {seed}, is not trained: it failed, or "
            "its study runs elsewhere; run again with --retry-failed once it is")


def blocked_message(plan: Plan, cell: Cell, seed: int, source_key: tuple[str, str, str]) -> str:
    """Why a run that reads ``source_key``'s run did not start."""
    if cell.model_from:
        study, source = plan.cell(cell.model_from)
        if run_key(study.name, source.slug, seed) == source_key:
            return not_trained_message(cell, seed)
    return (f"the run it reads, {source_key[0]}/{source_key[1]} seed {seed}, did not finish: it failed, or its study "
            "runs elsewhere; run again with --retry-failed once it has")


def job_for(plan: Plan, out_dir: Path, study: Study, cell: Cell, seed: int) -> CellRun:
    run_dir = run_dir_for(out_dir, study, cell, seed)
    model_from_dir = run_dir_for(out_dir, *plan.cell(cell.model_from), seed) if cell.model_from else None
    return CellRun(plan, study, cell, seed, plan.config_for(cell, seed), run_dir, model_from_dir)


def run_one(job: CellRun, run_fn: RunFn, blocked: str | None = None) -> dict[str, Any]:
    """One run, from a clean folder, into its results row; an error becomes a failed row (and
    ``error.txt``), never an exception. ``blocked``: the reason it cannot run (recorded as its failure).

    The same function runs a run here (:func:`run_plan`) and in a Ray task (``--ray``).
    """
    run_dir = job.run_dir
    if run_dir.exists():  # interrupted earlier: start this run again from nothing
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    row: dict[str, Any] = {"study": job.study.name, "cell": job.cell.slug, "seed": job.seed,
                           "run_dir": str(study_relative_run_dir(job.study, job.cell, job.seed))}
    start = time.perf_counter()
    try:
        if blocked:
            raise RuntimeError(blocked)
        metrics = run_fn(job)
        row.update(metrics)
        row["status"] = "done"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad cell must not sink a night of runs
        row["status"] = "failed"
        row["error"] = f"{type(exc).__name__}: {exc}"
        (run_dir / "error.txt").write_text(traceback.format_exc())
    row.setdefault("train_seconds", round(time.perf_counter() - start, 1))
    return row


def run_plan(
    plan: Plan, out_dir: str | Path, run_fn: RunFn, retry_failed: bool = False, studies: Collection[str] | None = None
) -> Path:
    """Run what is not finished yet (of ``studies`` only, if given); returns the results CSV path.

    The plan itself is never cut down to ``studies``: a cell may reuse the model of a
    cell in another study (``model_from``), which must stay resolvable.
    """
    out_dir = Path(out_dir)
    results_path, todo, planned = pending_runs(plan, out_dir, retry_failed, studies)

    def source_done(cell: Cell, seed: int) -> bool:
        # re-read: another runner sharing this folder may have finished the source since
        source = plan.cell(cell.model_from)
        return run_key(source[0].name, source[1].slug, seed) in finished_keys(results_path)

    with ProgressBar(
        len(planned), f"plan {plan.name}", unit="runs", completed=len(planned) - len(todo), elapsed=True, time_left=False
    ) as bar:
        deferred: set[tuple[str, str, str]] = set()
        queue = list(todo)
        while queue:
            study, cell, seed = queue.pop(0)
            key = run_key(study.name, cell.slug, seed)
            if cell.model_from and not source_done(cell, seed) and key not in deferred:
                # its model is trained by a later run, or by another runner: try again at the end
                deferred.add(key)
                queue.append((study, cell, seed))
                continue
            bar.update(label=f"{plan.name}: {study.name}/{cell.label} seed {seed}")
            # a plain line too: a study usually runs for hours into a log file, where a live bar never shows
            bar.print(f"{time.strftime('%H:%M:%S')} start {study.name}/{cell.label} seed {seed} "
                      f"({bar.completed + 1} of {len(planned)})")
            start = time.perf_counter()
            blocked = not_trained_message(cell, seed) if cell.model_from and not source_done(cell, seed) else None
            row = run_one(job_for(plan, out_dir, study, cell, seed), run_fn, blocked=blocked)
            if row["status"] == "failed":
                bar.print(f"[red]failed[/] {study.name}/{cell.label} seed {seed}: {row['error']}")
            append_result(results_path, row)
            if row["status"] == "done":
                bar.print(f"{time.strftime('%H:%M:%S')} done  {study.name}/{cell.label} seed {seed} in "
                          f"{time.perf_counter() - start:.0f} s: " + ", ".join(
                              f"{k} {float(row[k]):.3f}" for k in ("f1", "map50") if row.get(k) not in (None, "")))
            bar.advance()
    return results_path
