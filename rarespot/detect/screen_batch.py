"""Batch screening: run a detector over a folder of scans, flag the ones to look at.

``rarespot detect batch FOLDER --model M`` is a thin wrapper over
:func:`screen_folder`. Outputs in ``out_dir``:

- ``screen.csv``: one row per scan (file, n_detections, max_confidence,
  flagged, error, tiles, tiles_inspected, note), appended and flushed as each scan finishes, so an
  interrupted run resumes where it stopped: scans already in the CSV are skipped
  (with ``retry_errors``, rows that failed, e.g. a file still being copied, are redone);
- ``detections.jsonl``: the boxes of every scan with detections (one JSON line per scan).
  The CSV row is a scan's commit mark: on resume, JSONL lines of scans without a
  row (an interrupt between the two writes) are dropped, so no scan appears twice;
- ``thumbs/``: a thumbnail with the boxes drawn for each flagged scan;
- ``contact_sheet.html``: the flagged scans, most confident first, and the
  files that could not be read, with their error;
- ``screen.json``: the settings of the run; a resume with different settings is refused (a predictor
  option that is not recorded counts as its default, so runs recorded before an option existed resume).

A scan is flagged when its most confident box reaches ``flag_conf``, or, with
``flag_class_conf``, when a box of a named class reaches that class's own confidence (for
example those ``rarespot detect evaluate --per-class-conf`` chose on validation scans, which
let a rare class that scores low still flag its scan): :class:`FlagRule`.

A scan with nothing to inspect (all background, :mod:`rarespot.detect.foreground`) gets a row
with no detections and ``note`` saying so; it is not an error. ``tiles_inspected`` of ``tiles``
went to the network.

The next scans are read and prepared (decoded, windowed to 8 bits, foreground found) in a
background thread while the current one runs; rows come out in the same order and with the
same content as one file at a time. The run reports scans per second.

Bad files do not stop the run: they get a row with the error and are listed in the sheet;
what the image decoders print about them (e.g. ``libpng error: IDAT: CRC error``) goes into
that row's message, not onto the terminal. An interrupt (Ctrl-C) writes the contact sheet
of the scans done so far and raises :class:`ScreenInterrupted`, which says how to resume.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rarespot.detect.predict import detections_to_records
from rarespot.detect.settings import InferenceSettings, check_class_names
from rarespot.errors import InputError, RarespotError
from rarespot.io.images import IMAGE_SUFFIXES
from rarespot.io.atomic import atomic_write_bytes

SCAN_SUFFIXES = tuple(sorted(IMAGE_SUFFIXES))  # what rarespot.io.images reads
CSV_FIELDS = ["file", "n_detections", "max_confidence", "flagged", "error", "tiles", "tiles_inspected", "note"]
_OLD_CSV_FIELDS = CSV_FIELDS[:5]  # before issue 14: upgraded in place on resume
#: Scans read and prepared ahead of the one being screened.
PREFETCH = 2
CSV_NAME, JSONL_NAME, META_NAME, SHEET_NAME, THUMB_DIR = (
    "screen.csv", "detections.jsonl", "screen.json", "contact_sheet.html", "thumbs",
)


class ScreenInterrupted(KeyboardInterrupt):
    """Ctrl-C during a screening run; the finished scans are saved and the sheet written."""

    def __init__(self, done: int, total: int, n_errors: int, out_dir: Path):
        self.done, self.total, self.n_errors, self.out_dir = done, total, n_errors, out_dir
        super().__init__(self.message())

    def message(self, command: str | None = None) -> str:
        again = f"`{command}`" if command else f"the same screening into {self.out_dir}"
        retry = (
            f"; add --retry-errors to try the {self.n_errors} scans that could not be read again" if self.n_errors else ""
        )
        return f"interrupted after {self.done} of {self.total} scans; run {again} again to resume{retry}"


@dataclass(frozen=True)
class FlagRule:
    """When a scan is flagged: a box of a class named in ``per_class`` reaches that class's
    confidence, or a box of any other class reaches ``conf``."""

    conf: float = 0.5
    per_class: tuple[tuple[str, float], ...] = ()  # (class name, confidence); a tuple, so the rule pickles and compares

    @classmethod
    def of(cls, flag_conf: float, flag_class_conf: dict[str, float] | None = None, conf: float = 0.0) -> FlagRule:
        """The rule, checked against the box threshold ``conf``: a flag confidence under it would never be reached."""
        per_class = tuple((str(name), float(c)) for name, c in (flag_class_conf or {}).items())
        for name, c in (("flag_conf", flag_conf), *per_class):
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"flag confidence of {name} ({c}) must lie in [0, 1]")
            if c < conf:
                raise ValueError(f"flag confidence of {name} ({c}) is below conf ({conf}): boxes under conf are "
                                 "never seen; lower conf")
        return cls(float(flag_conf), per_class)

    def threshold(self, class_name: str) -> float:
        return dict(self.per_class).get(class_name, self.conf)

    def flags(self, records: Sequence[dict]) -> bool:
        return any(r["score"] >= self.threshold(r["class_name"]) for r in records)

    def check(self, class_names: Sequence[str], model=None) -> None:
        """A class name the model does not have is an error (a typo would silently never flag)."""
        check_class_names([name for name, _ in self.per_class], class_names, model, "flag confidences name")

    def describe(self) -> str:
        if not self.per_class:
            return f"top box ≥ {self.conf:g}"
        named = ", ".join(f"{name} {c:g}" for name, c in self.per_class)
        return f"a box at its class's flag confidence: {named}; any other class {self.conf:g}"


@dataclass
class ScreenResult:
    """What a screening run produced. Counts cover the whole CSV, resumed rows included."""

    csv_path: Path
    sheet_path: Path
    n_scans: int
    n_flagged: int
    n_errors: int
    n_skipped: int  # already in the CSV from an earlier run
    seconds: float
    n_screened: int = 0  # scans screened by this run
    screen_seconds: float = 0.0  # time from the first scan started to the last row written

    @property
    def scans_per_second(self) -> float:
        return self.n_screened / self.screen_seconds if self.screen_seconds > 0 else 0.0


def list_scans(source: str | Path, exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """The scans to screen and the folder their names are relative to.

    source: a folder (searched recursively for scan suffixes) or a text file
    listing one scan path a line (relative to the list's folder; ``#`` comments).
    exclude: a folder to leave out (the output folder, when it sits inside the source).
    """
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such folder or list file")
    if source.is_dir():
        root = source
        excluded = exclude.resolve() if exclude is not None else None
        files = sorted(
            p for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES
            and not (excluded is not None and excluded in p.resolve().parents)
        )
        if not files:
            raise InputError(source, f"no scans found (looked for {', '.join(SCAN_SUFFIXES)} in all subfolders)")
        return root, files
    root = source.parent
    try:
        lines = source.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, f"cannot read the list file: {exc}") from None
    files = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            files.append(path if path.is_absolute() else root / path)
    if not files:
        raise InputError(source, "the list file names no scans")
    return root, files


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _as_run(predictor_options: dict) -> dict:
    """Recorded predictor options with every option not recorded at its :class:`InferenceSettings` default, as the
    run had it: an option left at its default and the same value given explicitly are the same run, and a run
    recorded before an option existed resumes under it."""
    defaults = {name: str(field.default) for name, field in InferenceSettings.model_fields.items() if name != "conf"}
    return {**defaults, **predictor_options}


def _read_done_rows(csv_path: Path) -> list[dict]:
    """Rows of an earlier run; a half-written last line (a crash mid-row) is cut off first."""
    if not csv_path.exists():
        return []
    raw = csv_path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        atomic_write_bytes(csv_path, raw)
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    if fields and fields == _OLD_CSV_FIELDS:  # a run of an earlier version: add the new columns, empty
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(csv_path, buf.getvalue().encode())
        rows = [{**{k: "" for k in CSV_FIELDS}, **r} for r in rows]
    elif fields and fields != CSV_FIELDS:
        raise InputError(csv_path, f"not a rarespot screening CSV (columns {fields}); use another --out")
    return rows


def _drop_error_rows(csv_path: Path, rows: list[dict]) -> list[dict]:
    """Rewrite the CSV without its failed rows (so those scans are screened again); returns the kept rows."""
    kept = [r for r in rows if not r["error"]]
    if len(kept) != len(rows):
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_bytes(csv_path, buf.getvalue().encode())
    return kept


def _reconcile_jsonl(jsonl_path: Path, committed: set[str]) -> None:
    """Keep one JSONL line per scan that has its CSV row: lines of scans interrupted between
    the two writes (or cut mid-line) go, since those scans are screened again."""
    if not jsonl_path.exists():
        return
    raw = jsonl_path.read_bytes()
    lines, seen = [], set()
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            continue  # half-written last line
        try:
            name = json.loads(line)["file"]
        except (ValueError, KeyError, TypeError):
            continue
        if name in committed and name not in seen:
            seen.add(name)
            lines.append(line)
    cleaned = b"".join(lines)
    if cleaned != raw:
        atomic_write_bytes(jsonl_path, cleaned)


def _box(record: dict) -> list[float]:
    return [record["x1"], record["y1"], record["x2"], record["y2"]]


def _thumb_name(name: str) -> str:
    # Readable and unique: the sanitised path plus a short hash (a/x.png and a_x.png differ).
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:]
    return f"{stem}_{hashlib.sha1(name.encode()).hexdigest()[:8]}.png"


def _thumbnail(image: np.ndarray, records: list[dict], class_names: Sequence[str], max_side: int, render_overlay):
    """Shrink first, then draw (``rarespot.viz.render_overlay``): boxes stay readable and drawing is cheap."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    boxes = np.array([_box(r) for r in records], dtype=np.float64).reshape(-1, 4) * scale
    return render_overlay(
        image,
        pred_boxes=boxes,
        pred_labels=np.array([r["label"] for r in records], dtype=np.int64),
        pred_scores=np.array([r["score"] for r in records], dtype=np.float64),
        class_names=list(class_names),
    )


def _load_predictor(model, settings: InferenceSettings):
    if not isinstance(model, (str, Path)):
        return model  # a predictor object (TiledPredictor or anything with .predict and .class_names)
    from rarespot.detect.predict import open_predictor

    return open_predictor(model, settings)


def screen_folder(
    source: str | Path,
    model,
    out_dir: str | Path,
    *,
    conf: float | None = None,
    flag_conf: float = 0.5,
    flag_class_conf: dict[str, float] | None = None,
    restart: bool = False,
    retry_errors: bool = False,
    thumb_px: int = 384,
    progress: bool = True,
    ray=None,
    settings: InferenceSettings | None = None,
    **predictor_options,
) -> ScreenResult:
    """Screen every scan in ``source`` and write the CSV, the JSONL of boxes and the contact sheet.

    source: a folder (recursive) or a list file, see :func:`list_scans`.
    model: a model file (built into a TiledPredictor with ``settings``) or a predictor object.
    settings: the predictor's :class:`~rarespot.detect.settings.InferenceSettings`; ``predictor_options``:
        fields of it given as keywords (e.g. ``tile=512, device="cpu"``), changing those of ``settings``.
    conf: boxes below this are dropped; a scan's ``n_detections`` counts the rest. Default: the
        settings' ``conf`` (0.25); given, it is the predictor's threshold too.
    flag_conf: a scan is flagged when its most confident box reaches this.
    flag_class_conf: class name -> its own flag confidence (the others keep ``flag_conf``); e.g.
        :func:`rarespot.detect.settings.class_conf_from` of a ``detect evaluate --per-class-conf`` metrics.json.
    restart: forget an earlier run in ``out_dir`` instead of resuming it.
    retry_errors: on resume, screen again the scans whose rows hold an error (e.g. a
        file that was still being copied), instead of keeping those rows.
    ray: a :class:`rarespot.ray_backend.RaySettings` to screen on a Ray cluster (one model replica per
        worker); the rows, boxes, thumbnails and sheet are written here, by the same code, as locally.
    Ctrl-C: raises :class:`ScreenInterrupted` after saving what is done.
    """
    settings = settings or InferenceSettings()
    conf = settings.conf if conf is None else conf
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf ({conf}) must lie in [0, 1]")
    flag = FlagRule.of(flag_conf, flag_class_conf, conf)
    settings = settings.replace(**predictor_options, conf=conf)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    root, files = list_scans(source, exclude=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, jsonl_path, meta_path = out_dir / CSV_NAME, out_dir / JSONL_NAME, out_dir / META_NAME

    model_file = model if isinstance(model, (str, Path)) else getattr(model, "model_path", None)
    meta = {
        "source": str(Path(source).resolve()),
        # An in-memory predictor without a file cannot be told apart from another: not compared.
        "model": str(Path(model_file).resolve()) if model_file else "(predictor object)",
        "conf": conf,
        "flag_conf": flag_conf,
        **({"flag_class_conf": dict(flag.per_class)} if flag.per_class else {}),  # absent, as in earlier runs, when unused
        # The settings given (besides conf), as the keyword options of earlier versions: their runs resume.
        "predictor_options": {k: str(v) for k, v in settings.given("conf").items()},
    }
    if restart:
        for path in (csv_path, jsonl_path, meta_path):
            path.unlink(missing_ok=True)
        shutil.rmtree(out_dir / THUMB_DIR, ignore_errors=True)
    elif meta_path.exists() and _read_done_rows(csv_path):  # a run that screened nothing yet (say, a typo
        old = json.loads(meta_path.read_text())              # in a class name stopped it) holds nothing to protect
        changed = [k for k in meta if (_as_run(old.get(k) or {}) != _as_run(meta[k]) if k == "predictor_options"
                                       else old.get(k) != meta[k])]
        if changed:
            raise RarespotError(
                f"{meta_path}: an earlier run used different {', '.join(changed)}; "
                "pass --restart to start over, or another --out"
            )
    (out_dir / THUMB_DIR).mkdir(exist_ok=True)
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())

    done_rows = _read_done_rows(csv_path)
    if retry_errors:
        done_rows = _drop_error_rows(csv_path, done_rows)
    done = {row["file"] for row in done_rows}
    _reconcile_jsonl(jsonl_path, {row["file"] for row in done_rows if row["n_detections"] not in ("", "0")})
    todo = [(f, _relative_name(f, root)) for f in files]
    todo = [(f, name) for f, name in todo if name not in done]

    if todo:
        try:
            if ray is None:
                predictor = _load_predictor(model, settings)
                flag.check(predictor.class_names, model_file)
                started = time.perf_counter()
                outcomes = _screen_here(todo, predictor, conf, flag, thumb_px)
                _write_outcomes(outcomes, len(todo), out_dir, csv_path, jsonl_path, progress)
            else:
                from rarespot.ray_backend import screen_on_ray

                with screen_on_ray(todo, model, ray, conf=conf, flag=flag, thumb_px=thumb_px,
                                   inference=settings) as (outcomes, label):
                    started = time.perf_counter()
                    _write_outcomes(outcomes, len(todo), out_dir, csv_path, jsonl_path, progress, label=label)
        except KeyboardInterrupt:
            rows = _read_done_rows(csv_path)
            write_contact_sheet(out_dir, rows, source=Path(source), conf=conf, flag=flag)
            raise ScreenInterrupted(len(rows), len(files), sum(bool(r["error"]) for r in rows), out_dir) from None

    rows = _read_done_rows(csv_path)
    sheet_path = write_contact_sheet(out_dir, rows, source=Path(source), conf=conf, flag=flag)
    return ScreenResult(
        csv_path=csv_path,
        sheet_path=sheet_path,
        n_scans=len(rows),
        n_flagged=sum(r["flagged"] == "1" for r in rows),
        n_errors=sum(bool(r["error"]) for r in rows),
        n_skipped=len(files) - len(todo),
        seconds=time.perf_counter() - start,
        n_screened=len(todo),
        screen_seconds=time.perf_counter() - started if todo else 0.0,
    )


def _load_scan(path: Path, prepare, read_image, decoder_messages):
    """Read (and prepare, when the predictor can) one scan; runs in the prefetch thread."""
    failure = None
    with decoder_messages() as decoder:  # libpng & co. print to stderr: into this row instead
        try:
            image = read_image(path)
        except InputError as exc:
            failure = exc
    if failure is not None:
        said = decoder["text"]
        raise InputError(path, f"{failure.problem} ({said})" if said else failure.problem)
    return image, (prepare(image) if prepare is not None else None)


def _screen_one(name: str, load, predictor, class_names, conf: float, flag: FlagRule, thumb_px: int):
    """One scan's outcome, nothing written: ``(name, row, records, thumbnail PNG bytes or None)``.

    ``load()`` returns ``(image, prepared)`` or raises (an unreadable file becomes a row with its error).
    Ray workers screen scan by scan with this; here, :func:`_screen_here` streams the scans through
    the network and builds the same outcomes with :func:`_outcome`.
    """
    return _outcome(name, *_load_and_predict(load, predictor), class_names, conf, flag, thumb_px)


def _load_and_predict(load, predictor) -> tuple:
    """``(image, Detections)`` of one scan, or ``(None, the exception)`` its reading or prediction
    raised: one scan's failure is its own outcome."""
    try:
        image, prepared = load()
        dets = predictor.predict(image, prepared=prepared) if prepared is not None else predictor.predict(image)
    except Exception as exc:
        return None, exc
    return image, dets


def _outcome(name: str, image, dets, class_names, conf: float, flag: FlagRule, thumb_px: int):
    """``(name, row, records, thumbnail PNG bytes or None)`` of one scan's detections (or of the
    exception its reading or prediction raised)."""
    from rarespot.io.images import encode_image
    from rarespot.viz import render_overlay

    row = {"file": name, "n_detections": 0, "max_confidence": "", "flagged": 0, "error": "",
           "tiles": "", "tiles_inspected": "", "note": ""}
    try:
        if isinstance(dets, BaseException):
            raise dets
        info = getattr(dets, "info", None) or {}
        records = detections_to_records(dets, class_names, min_score=conf)
        top = records[0]["score"] if records else 0.0
        flagged = flag.flags(records)
        thumb = encode_image(_thumbnail(image, records, class_names, thumb_px, render_overlay)) if flagged else None
        row.update(
            n_detections=len(records), max_confidence=f"{top:.5f}" if records else "", flagged=int(flagged),
            tiles=info.get("tiles", ""), tiles_inspected=info.get("tiles_run", ""), note=info.get("note", ""),
        )
        return name, row, records, thumb
    except InputError as exc:
        row["error"] = exc.problem
    except Exception as exc:  # one bad scan must not end a night's batch; it is reported instead
        row["error"] = f"{type(exc).__name__}: {exc}"
    return name, row, [], None


def _screen_here(todo, predictor, conf, flag: FlagRule, thumb_px):
    """Outcomes of ``todo`` in order, screened in this process; the next scans are read and
    prepared in a background thread meanwhile."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from rarespot.io.images import decoder_messages, read_image
    import rarespot.viz  # noqa: F401  here, so a broken install fails once, not once per scan

    class_names = list(predictor.class_names)
    prepare = getattr(predictor, "prepare", None)  # TiledPredictor: decode, window and find the foreground ahead
    pool = ThreadPoolExecutor(1, thread_name_prefix="rarespot-prefetch")
    pending: deque = deque()
    upcoming = iter(todo)

    def queue_next() -> None:
        item = next(upcoming, None)
        if item is not None:
            pending.append((item, pool.submit(_load_scan, item[0], prepare, read_image, decoder_messages)))

    try:
        for _ in range(PREFETCH):
            queue_next()
        for (path, name), image, dets in _predictions(predictor, pending, queue_next):
            yield _outcome(name, image, dets, class_names, conf, flag, thumb_px)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _predictions(predictor, pending, queue_next):
    """(item, image, Detections or the scan's exception) for the prefetched scans, in order.

    A TiledPredictor gets them all as one stream (:meth:`~rarespot.detect.predict.TiledPredictor.predict_many`:
    the network runs the next scan's first tiles while this one is merged and written); any other
    predictor object is called scan by scan."""

    def scans():
        while pending:
            item, future = pending.popleft()
            queue_next()
            yield item, future.result  # the scan as read and prepared, or its reading error

    if hasattr(predictor, "predict_many"):
        yield from predictor.predict_many(scans())
        return
    for item, load in scans():
        yield item, *_load_and_predict(load, predictor)


def _write_outcomes(outcomes, total: int, out_dir, csv_path, jsonl_path, progress, label: str = "screening") -> None:
    """Commit each scan's outcome, in order: thumbnail, then JSONL line, then the CSV row (the commit mark).

    The one writer of both paths: outcomes screened here (:func:`_screen_here`) or on Ray workers."""
    from rarespot.progress import ProgressBar

    new_csv = not csv_path.exists() or csv_path.stat().st_size == 0
    with csv_path.open("a", newline="") as csv_fh, jsonl_path.open("a") as jsonl_fh, ProgressBar(
        total, label, progress, unit="scans", rate=True
    ) as bar:
        writer = csv.DictWriter(csv_fh, fieldnames=CSV_FIELDS)
        if new_csv:
            writer.writeheader()
        n_flagged = 0
        bar.status("0 flagged")
        for name, row, records, thumb in outcomes:
            try:
                if thumb is not None:
                    # The thumbnail is written before the CSV row: a row always has its thumbnail.
                    atomic_write_bytes(out_dir / THUMB_DIR / _thumb_name(name), thumb)
                if records:
                    jsonl_fh.write(json.dumps({"file": name, "detections": records}) + "\n")
                    jsonl_fh.flush()
            except Exception as exc:  # e.g. the disk filled up: this scan is reported, the batch goes on
                row = {**{k: "" for k in CSV_FIELDS}, "file": name, "n_detections": 0, "flagged": 0,
                       "error": f"{type(exc).__name__}: {exc}"}
            n_flagged += row["flagged"] == 1
            # The CSV row is the commit mark of a scan: flushed and synced before the next one starts.
            writer.writerow(row)
            csv_fh.flush()
            os.fsync(csv_fh.fileno())
            bar.status(f"{n_flagged} flagged")
            bar.advance()


def write_contact_sheet(out_dir: Path, rows: Iterable[dict], source: Path, conf: float, flag: FlagRule) -> Path:
    """The HTML page of flagged scans (most confident first, thumbnails with boxes) and unreadable files."""
    rows = list(rows)
    flagged = sorted((r for r in rows if r["flagged"] == "1"), key=lambda r: -float(r["max_confidence"] or 0))
    errors = [r for r in rows if r["error"]]
    esc = html.escape
    cards = []
    for r in flagged:
        thumb = f"{THUMB_DIR}/{_thumb_name(r['file'])}"
        cards.append(
            f'<figure><a href="{esc(thumb)}"><img src="{esc(thumb)}" loading="lazy" alt="{esc(r["file"])}"></a>'
            f'<figcaption><b>{float(r["max_confidence"]):.3f}</b> · {esc(r["n_detections"])} boxes'
            f'<br>{esc(r["file"])}</figcaption></figure>'
        )
    error_rows = "".join(f"<tr><td>{esc(r['file'])}</td><td>{esc(r['error'])}</td></tr>" for r in errors)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rarespot screening: {esc(source.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 20px; background: #1b1d21; color: #e6e6e6; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 260px; background: #24272d; padding: 6px; border-radius: 4px; }}
figure img {{ width: 100%; height: auto; display: block; }}
figcaption {{ font-size: 12px; word-break: break-all; margin-top: 4px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #444; padding: 3px 8px; text-align: left; }}
.muted {{ color: #9aa0a8; }}
</style></head><body>
<h1>Screening of {esc(str(source))}</h1>
<p class="muted">{len(rows)} scans · <b>{len(flagged)} flagged</b> ({esc(flag.describe())}) ·
{len(errors)} unreadable · boxes shown ≥ {conf:g} · predictions in green · full results in {CSV_NAME}</p>
<h2>Flagged scans, most confident first</h2>
<div class="grid">{''.join(cards) or '<p>No scan reached the flag threshold.</p>'}</div>
<h2>Files that could not be screened</h2>
{f'<table><tr><th>file</th><th>error</th></tr>{error_rows}</table>' if errors else '<p>None.</p>'}
{f'<p class="muted">Files still being copied, or fixed since: run the screening again with <code>--retry-errors</code> to screen these {len(errors)} again.</p>' if errors else ''}
</body></html>
"""
    path = out_dir / SHEET_NAME
    atomic_write_bytes(path, page.encode())
    return path
