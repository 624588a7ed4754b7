"""ICBHI 2017 respiratory cycles: reading the two on-disk layouts, cutting, padding, splits.

Two layouts are read into the same list of ``Cycle`` records:

* the official layout: a folder of ``<recording>.wav|.flac`` + ``<recording>.txt``
  (one ``start end crackle wheeze`` line per respiratory cycle), optionally with
  the official split file ``ICBHI_challenge_train_test.txt`` (recording -> train/test)
  and ``patient_diagnosis.csv``;
* a per-cycle manifest: a CSV with one clip file per row and its labels, with
  columns ``file`` plus either ``crackle`` and ``wheeze`` (0/1) or ``label``
  (normal/crackle/wheeze/both); optional ``recording``, ``cycle``, ``split``.

The patient id is the first ``_``-separated field of the recording name
(``157_1b1_Lr_sc_Meditron`` -> ``157``); every split here keeps a patient on one side.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rarespot.errors import InputError
from rarespot.io.audio import audio_info
from rarespot.metrics.icbhi import ICBHI_CLASSES

CLASS_NAMES = ICBHI_CLASSES  # normal, crackle, wheeze, both
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE = "patient_diagnosis.csv"


class AnnotationWarning(UserWarning):
    """An annotation that was repaired (cycles clipped to the audio's end, or dropped)."""


def label_from_flags(crackle: int, wheeze: int) -> int:
    """(crackle, wheeze) -> class index: normal 0, crackle 1, wheeze 2, both 3."""
    return int(bool(crackle)) + 2 * int(bool(wheeze))


def patient_of(recording: str) -> str:
    return recording.split("_", 1)[0]


@dataclass(frozen=True)
class Cycle:
    """One respiratory cycle.

    audio_path: the recording (official layout) or the clip (manifest layout).
    start, end: seconds inside ``audio_path``; ``None`` means the whole file (a clip).
    """

    audio_path: Path
    recording: str
    index: int
    label: int
    start: float | None = None
    end: float | None = None

    @property
    def patient(self) -> str:
        return patient_of(self.recording)

    @property
    def label_name(self) -> str:
        return CLASS_NAMES[self.label]


# --------------------------------------------------------------------------- annotations


def parse_annotation(path: str | Path) -> list[tuple[float, float, int, int]]:
    """Read an ICBHI annotation file: ``start end crackle wheeze`` per line (tabs or spaces)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    rows = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "annotation file is not text (expected 'start end crackle wheeze' lines)") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise InputError(path, f"line {lineno}: expected 4 fields 'start end crackle wheeze', found {len(fields)}")
        try:
            start, end = float(fields[0]), float(fields[1])
            crackle, wheeze = int(fields[2]), int(fields[3])
        except ValueError:
            raise InputError(path, f"line {lineno}: cannot read numbers from {line.strip()!r}") from None
        if crackle not in (0, 1) or wheeze not in (0, 1):
            raise InputError(path, f"line {lineno}: crackle and wheeze must be 0 or 1")
        if not end > start >= 0:
            raise InputError(path, f"line {lineno}: cycle end {end} is not after its start {start}")
        rows.append((start, end, crackle, wheeze))
    if not rows:
        raise InputError(path, "annotation file lists no cycles")
    return rows


def cycles_for_recording(
    audio_path: str | Path,
    annotation_path: str | Path | None = None,
    *,
    min_cycle_seconds: float = 0.05,
) -> list[Cycle]:
    """The annotated cycles of one recording, checked against the audio's length.

    Cycles that run past the end of the audio are clipped to it and those that
    start after it are dropped; both are warned about, naming the annotation file.
    """
    audio_path = Path(audio_path)
    annotation_path = Path(annotation_path) if annotation_path else audio_path.with_suffix(".txt")
    if not annotation_path.is_file():
        raise InputError(audio_path, f"recording has no annotation file (looked for {annotation_path.name})")
    rows = parse_annotation(annotation_path)
    duration = audio_info(audio_path).duration
    cycles, clipped, dropped = [], [], []
    for i, (start, end, crackle, wheeze) in enumerate(rows):
        if end > duration + 1e-3:
            if duration - start < min_cycle_seconds:
                dropped.append(i)
                continue
            clipped.append(i)
            end = duration
        cycles.append(Cycle(audio_path, audio_path.stem, i, label_from_flags(crackle, wheeze), start, end))
    if clipped or dropped:
        parts = []
        if clipped:
            parts.append(f"{len(clipped)} cycle(s) (line {', '.join(str(i + 1) for i in clipped[:5])}) clipped")
        if dropped:
            parts.append(f"{len(dropped)} cycle(s) (line {', '.join(str(i + 1) for i in dropped[:5])}) dropped")
        warnings.warn(
            f"{annotation_path}: cycles run past the end of {audio_path.name} ({duration:.3f} s): " + ", ".join(parts),
            AnnotationWarning,
            stacklevel=2,
        )
    return cycles


def read_split_file(path: str | Path) -> dict[str, str]:
    """The official split file: ``<recording> train|test`` per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "split file not found")
    split = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise InputError(path, f"line {lineno}: expected '<recording> train|test', found {line.strip()!r}")
        split[fields[0]] = fields[1]
    return split


def read_diagnoses(path: str | Path) -> dict[str, str]:
    """patient_diagnosis.csv: patient id -> diagnosis (with or without the ``ID,CLASS`` header)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "diagnosis file not found")
    out = {}
    for line in path.read_text().splitlines():
        fields = [f.strip() for f in line.replace("\t", ",").split(",")]
        if len(fields) >= 2 and fields[0].isdigit():
            out[fields[0]] = fields[1]
    if not out:
        raise InputError(path, "no 'patient,diagnosis' rows found")
    return out


def load_official(
    root: str | Path,
    *,
    split: str | None = None,
    split_file: str | Path | None = None,
    annotation_dir: str | Path | None = None,
    missing_annotation: str = "error",
) -> list[Cycle]:
    """All cycles of the recordings in ``root`` (official ICBHI layout).

    split: "train" or "test" keeps the recordings of that official split (needs the
    split file, found in ``root`` or its parent unless given).
    annotation_dir: where the ``.txt`` files are, when not next to the audio.
    missing_annotation: "error" (default) or "skip" (warn and leave the recording out).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder of recordings")
    audio_files = sorted(p for p in root.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not audio_files:
        raise InputError(root, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    if split is not None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train', 'test' or None, not {split!r}")
        split_path = Path(split_file) if split_file else _find_near(root, SPLIT_FILE)
        if split_path is None:
            raise InputError(root, f"split={split!r} needs the official split file {SPLIT_FILE} (not found here or in the parent folder)")
        assignment = read_split_file(split_path)
        audio_files = [p for p in audio_files if assignment.get(p.stem) == split]
        if not audio_files:
            raise InputError(root, f"no recording of this folder is in the official {split!r} split ({split_path.name})")
    cycles = []
    for audio in audio_files:
        annotation = Path(annotation_dir) / f"{audio.stem}.txt" if annotation_dir else audio.with_suffix(".txt")
        if not annotation.is_file() and missing_annotation == "skip":
            warnings.warn(f"{audio}: no annotation file {annotation.name}; recording skipped", AnnotationWarning, stacklevel=2)
            continue
        cycles.extend(cycles_for_recording(audio, annotation))
    return cycles


def load_manifest(csv_path: str | Path, *, split: str | None = None) -> list[Cycle]:
    """Cycles from a per-cycle manifest CSV (paths relative to the CSV's folder)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(csv_path, "manifest not found")
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or [])
        if "file" not in columns or not ({"crackle", "wheeze"} <= columns or "label" in columns):
            raise InputError(csv_path, f"manifest needs a 'file' column and 'crackle'+'wheeze' or 'label' columns; found {sorted(columns)}")
        rows = list(reader)
    cycles = []
    for lineno, row in enumerate(rows, 2):
        if split is not None and row.get("split", split) != split:
            continue
        clip = csv_path.parent / row["file"]
        try:
            if "label" in columns and row.get("label"):
                name = row["label"].strip().lower()
                if name not in CLASS_NAMES:
                    raise ValueError(f"label {name!r} is not one of {', '.join(CLASS_NAMES)}")
                label = CLASS_NAMES.index(name)
            else:
                label = label_from_flags(int(row["crackle"]), int(row["wheeze"]))
            index = int(row["cycle"]) if row.get("cycle") else lineno - 2
        except (ValueError, TypeError) as exc:
            raise InputError(csv_path, f"line {lineno}: {exc}") from None
        if not clip.is_file():
            raise InputError(clip, f"clip listed on line {lineno} of {csv_path.name} not found")
        recording = row.get("recording") or clip.stem
        cycles.append(Cycle(clip, recording, index, label))
    if not cycles:
        raise InputError(csv_path, "manifest lists no cycles" + (f" in split {split!r}" if split else ""))
    return cycles


def load_cycles(path: str | Path, *, split: str | None = None, **kwargs) -> list[Cycle]:
    """A manifest CSV or a folder in the official layout, whichever ``path`` is."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return load_manifest(path, split=split)
    if path.is_dir():
        return load_official(path, split=split, **kwargs)
    if not path.exists():
        raise InputError(path, "not found")
    raise InputError(path, "expected a manifest .csv or a folder of recordings with annotation .txt files")


def _find_near(root: Path, name: str) -> Path | None:
    for folder in (root, root.parent):
        if (folder / name).is_file():
            return folder / name
    return None


# --------------------------------------------------------------------------- signals


def cut_cycle(audio: np.ndarray, sample_rate: int, start: float | None, end: float | None) -> np.ndarray:
    """The samples of one cycle (``None`` bounds = the file's start / end)."""
    a = 0 if start is None else int(round(start * sample_rate))
    b = len(audio) if end is None else int(round(end * sample_rate))
    return audio[max(a, 0) : max(min(b, len(audio)), 0)]


def fit_length(x: np.ndarray, length: int, mode: str = "repeat") -> np.ndarray:
    """Crop (keeping the start) or pad a 1-D signal to ``length`` samples.

    mode "repeat" tiles the cycle (a breath cycle repeated sounds like breathing;
    zero padding adds silence a model can learn to count); "zero" pads with zeros.
    """
    if mode not in ("repeat", "zero"):
        raise ValueError(f"pad mode must be 'repeat' or 'zero', not {mode!r}")
    if len(x) >= length:
        return x[:length]
    if len(x) == 0:
        return np.zeros(length, dtype=np.float32)
    if mode == "zero":
        return np.pad(x, (0, length - len(x)))
    reps = -(-length // len(x))
    return np.tile(x, reps)[:length]


def fixed_windows(duration: float, window: float, hop: float | None = None) -> list[tuple[float, float]]:
    """(start, end) windows covering a recording, for prediction without an annotation.

    The last window is kept when it is at least half a window long.
    """
    hop = hop or window
    out, start = [], 0.0
    while start < duration - 1e-9:
        end = min(start + window, duration)
        if end - start >= window / 2 or not out:
            out.append((round(start, 6), round(end, 6)))
        start += hop
    return out


# --------------------------------------------------------------------------- splits


def class_counts(labels, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def patient_kfold(cycles: list[Cycle], k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index pairs; each patient's cycles are all on one side.

    sklearn's StratifiedGroupKFold keeps the class mix of the folds close to the whole.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.array([c.patient for c in cycles])
    labels = np.array([c.label for c in cycles])
    n_patients = len(set(groups))
    if n_patients < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} patients; the data has {n_patients}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than folds; the split is still patient-wise.
        warnings.simplefilter("ignore", UserWarning)
        return [(np.asarray(tr), np.asarray(va)) for tr, va in splitter.split(np.zeros(len(cycles)), labels, groups)]


def patient_split(cycles: list[Cycle], val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One patient-wise (train, validation) split with about ``val_fraction`` of the patients in validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    k = max(2, int(round(1 / val_fraction)))
    n_patients = len({c.patient for c in cycles})
    if n_patients < 2:
        raise ValueError(f"a patient-wise validation split needs at least 2 patients; the data has {n_patients}")
    return patient_kfold(cycles, min(k, n_patients), seed)[0]


def describe(cycles: list[Cycle]) -> str:
    counts = Counter(c.label_name for c in cycles)
    patients = len({c.patient for c in cycles})
    mix = ", ".join(f"{name} {counts.get(name, 0)}" for name in CLASS_NAMES)
    return f"{len(cycles)} cycles from {patients} patients ({mix})"
