"""Save and open a rarespot model file (a torch-saved dict tagged with its format).

Shared by the screen and sounds pipelines: both save ``{"format": ..., ...}``
atomically (:func:`atomic_torch_save`) and need the same checks on load
(:func:`load_tagged_checkpoint`: missing file, not a torch file, a file of another kind).
"""

from __future__ import annotations

from pathlib import Path

from rarespot.errors import InputError
from rarespot.io.atomic import atomic_path


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``: a crash never
    leaves a half-written checkpoint, and a reader never sees one."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_tagged_checkpoint(path: str | Path, default_name: str, fmt: str, what: str, how_to_make: str) -> tuple[Path, dict]:
    """(resolved path, saved dict) of a model file whose ``"format"`` entry is ``fmt``.

    ``path`` may be a folder holding ``default_name``. ``what`` names the kind of
    model in messages ("rarespot screen model"); ``how_to_make`` says which command
    writes one. Uses ``weights_only=False``: these files hold fitted scikit-learn
    objects and configs too, so, as with any pickle, load only files you made or trust.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch/pickle raise many types for a file that is not a checkpoint
        first_line = (str(exc).splitlines() or [""])[0][:160]
        raise InputError(path, f"not a readable {what} ({type(exc).__name__}: {first_line})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise InputError(path, f"not a {what} file (write one with `{how_to_make}`)")
    return path, state
