"""Model files of the screen and sounds pipelines: one atomic save, one checked load."""

from __future__ import annotations

import pytest
import torch

from rarespot.errors import InputError
from rarespot.io.checkpoint import atomic_torch_save, load_tagged_checkpoint


def test_atomic_save_round_trips_and_leaves_no_temp_file(tmp_path):
    blob = {"format": "rarespot-test/1", "weights": torch.arange(6.0).reshape(2, 3), "epoch": 4}
    atomic_torch_save(blob, tmp_path / "run" / "best.pt")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["best.pt"]
    path, back = load_tagged_checkpoint(tmp_path / "run", "best.pt", "rarespot-test/1", "test model", "make one")
    assert path == tmp_path / "run" / "best.pt"
    assert back["epoch"] == 4 and torch.equal(back["weights"], blob["weights"])


def test_a_failed_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "best.pt"
    atomic_torch_save({"format": "old"}, target)
    with pytest.raises(Exception):
        atomic_torch_save({"format": "new", "bad": lambda: None}, target)  # a lambda does not pickle
    assert torch.load(target, weights_only=False) == {"format": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_load_names_a_file_of_another_kind(tmp_path):
    atomic_torch_save({"format": "other"}, tmp_path / "m.pt")
    with pytest.raises(InputError, match="not a test model file"):
        load_tagged_checkpoint(tmp_path / "m.pt", "best.pt", "rarespot-test/1", "test model", "make one")
