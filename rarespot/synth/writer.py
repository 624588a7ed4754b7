"""``generate``: many scans written in parallel as a resumable VOC folder.

Every scan depends only on ``(seed, index)``, so the files do not depend on
the number of workers or their order, and an interrupted run resumes by
keeping the scans already written (``synth.json`` records the settings).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from rarespot.io.dataset import DetectionDataset, ImageRecord
from rarespot.progress import ProgressBar
from rarespot.synth.dress import CLASS_NAMES, CLS
from rarespot.synth.scan import DEFAULT_SIZE, generate_scan

# Bump when a change alters the scans, so a resumed run never mixes old and new files.
GENERATOR_VERSION = 1


def scan_name(index: int) -> str:
    return f"scan_{index:05d}"


def _write_one(args) -> tuple[int, list, list, str, int, int]:
    """Generate and write one scan (atomically); reuse it if both files exist."""
    from rarespot.io.annotations import parse_voc_xml, voc_xml
    from rarespot.io.atomic import atomic_write_text
    from rarespot.io.images import write_image

    seed, index, size, out_dir = args
    out = Path(out_dir)
    png = out / "images" / f"{scan_name(index)}.png"
    xml = out / "annotations" / f"{scan_name(index)}.xml"
    if png.is_file() and xml.is_file():  # resume: files depend only on (seed, index)
        try:
            info = parse_voc_xml(xml)
            labels = [CLS[n] for n in info["names"]]
            return index, info["boxes"], labels, info["subject"], info["width"], info["height"]
        except Exception:
            pass  # unreadable leftover: regenerate
    image, boxes, labels, subject = generate_scan(seed, index, size)
    rec = ImageRecord(Path("images") / png.name, size[1], size[0], boxes, labels, subject)
    write_image(png, image, fast=True)
    atomic_write_text(xml, voc_xml(rec, png.name, CLASS_NAMES))
    return index, boxes.tolist(), labels.tolist(), subject, size[1], size[0]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _claim_folder(out: Path, seed: int, size: tuple[int, int]) -> None:
    """Resume only what this generator made with these settings; refuse anything else.

    ``synth.json`` records the settings; without it, a folder that already
    holds images is someone's data, not ours to add to.
    """
    import json

    from rarespot.errors import InputError
    from rarespot.io.atomic import atomic_write_text

    wanted = {"generator": "rarespot.synth", "version": GENERATOR_VERSION, "seed": seed, "size": list(size)}
    manifest = out / "synth.json"
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            found = None
        if found != wanted:
            was = (f"seed {found.get('seed')}, size {found.get('size')}, generator v{found.get('version')}"
                   if isinstance(found, dict) else "unreadable settings")
            raise InputError(out, f"holds synthetic scans made with other settings ({was}); "
                                  f"use another folder, or the same seed and size to resume")
    elif (out / "images").is_dir() and any((out / "images").iterdir()):
        raise InputError(out, "already holds images that rarespot synth did not make; choose an empty folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, json.dumps(wanted) + "\n")


def generate(
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    workers: int | None = None,
    progress: bool = True,
) -> DetectionDataset:
    """Write ``n`` synthetic scans (16-bit PNG + VOC XML + classes.txt) to ``out_dir``.

    size: (height, width), default the seed's 1500 x 1216.
    workers: processes (default: all CPU cores); the files do not depend on it.
    Interrupted runs resume: existing scan files are kept (``synth.json``
    records seed and size; a folder made with other settings is refused).
    """
    from rarespot.io.atomic import atomic_write_text

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    height, width = int(size[0]), int(size[1])
    if height < 200 or width < 150:
        raise ValueError(f"size {size} too small for a body scan; use at least 200 x 150")
    out = Path(out_dir)
    _claim_folder(out, seed, (height, width))
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.txt", "\n".join(CLASS_NAMES) + "\n")
    workers = max(1, min(workers or os.cpu_count() or 1, max(n, 1)))
    jobs = [(seed, i, (height, width), str(out)) for i in range(n)]

    results = []
    with ProgressBar(n, "synthesising scans", progress, unit="scans", transient=True) as bar:
        if workers == 1:
            threads = cv2.getNumThreads()
            _init_worker()  # as in a worker, but only for this loop: the caller's OpenCV keeps its threads
            try:
                for job in jobs:
                    results.append(_write_one(job))
                    bar.advance()
            finally:
                cv2.setNumThreads(threads)
        else:
            # Workers start from a clean process (forkserver/spawn), not a fork of
            # this one: forking a parent whose OpenCV or torch thread pools are
            # already running can deadlock the children.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=ctx) as pool:
                for res in pool.map(_write_one, jobs, chunksize=2):
                    results.append(res)
                    bar.advance()
    records = [
        ImageRecord(Path("images") / f"{scan_name(i)}.png", w, h, boxes, labels, subject)
        for i, boxes, labels, subject, w, h in sorted(results)
    ]
    return DetectionDataset(list(CLASS_NAMES), records, out)
