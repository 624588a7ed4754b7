"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

A crash or Ctrl-C never leaves a half-written scan or annotation file behind,
and readers never see one. Shared by every writer in rarespot.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _default_mode() -> int:
    # mkstemp creates 0600 files; give the final file the mode a plain open()
    # would have (0666 minus the umask), so datasets stay readable by others.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _default_mode()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """A temp path next to ``path`` for writers that want a file name
    (``torch.save``, ``np.save``, ``fig.savefig``); it replaces ``path`` only
    when the block finishes without an error. ``suffix`` keeps the extension
    the writer looks at (default: the target's own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and check a file can be written there, before any long work.

    Raises InputError naming the folder otherwise. The one home of this check for every
    command that writes a folder (train, predict, evaluate, export, screen).
    """
    from rarespot.errors import InputError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(out, f"cannot write to the output folder (not writable: {exc.strerror or exc})") from None
    return out

