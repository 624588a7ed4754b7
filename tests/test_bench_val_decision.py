"""bench/opixray_val_decision.py: the validation-side rule that picks a recipe change, on exact made-up rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "opixray_val_decision.py"
spec = importlib.util.spec_from_file_location("opixray_val_decision", SCRIPT)
decision = importlib.util.module_from_spec(spec)
spec.loader.exec_module(decision)


def _row(f1, rare, other=0.70):
    return {"f1": f1, "map50": 0.7, "epoch": 7, "ap50": {"Scissor": other, "Straight_Knife": rare}}


def _decide(base, variant, seeds_needed=2):
    return decision.decide(base, variant, "Straight_Knife", 0.05, 0.03, 0.10, seeds_needed)[0]


BASE = {"seed9": _row(0.75, 0.40), "seed10": _row(0.74, 0.42)}


@pytest.mark.parametrize("variant, verdict", [
    # +0.08 on the rare class in both seeds, F1 -0.02, Scissor -0.05: every check holds
    ({"seed9": _row(0.73, 0.48, 0.65), "seed10": _row(0.72, 0.50, 0.65)}, "the variant passes"),
    # the same mean gain, but below the base in one seed
    ({"seed9": _row(0.75, 0.39), "seed10": _row(0.74, 0.59)}, "the variant fails"),
    # a gain of 0.04 on the mean: not enough
    ({"seed9": _row(0.75, 0.44), "seed10": _row(0.74, 0.46)}, "the variant fails"),
    # F1 0.04 lower on the mean
    ({"seed9": _row(0.71, 0.50), "seed10": _row(0.70, 0.52)}, "the variant fails"),
    # another class loses 0.11 AP50
    ({"seed9": _row(0.75, 0.50, 0.59), "seed10": _row(0.74, 0.52, 0.59)}, "the variant fails"),
    # one seed in: no verdict yet, however good it looks
    ({"seed9": _row(0.80, 0.70)}, "undecided (1 of 2 seeds in)"),
    # one seed in, the rare class below the base's there: lost whatever the other seed shows
    ({"seed9": _row(0.80, 0.39)}, "the variant fails (with 1 of 2 seeds in: below the base in a seed)"),
])
def test_the_rule_needs_every_check_and_every_seed(variant, verdict):
    assert _decide(BASE, variant) == verdict


def test_runs_rescored_from_several_studies_count_one_each_in_seed_order():
    """Keys "seed9@study" (bench_opixray_recipe.py --val-only --rescore --runs-from): one run of a seed per study."""
    base = {"seed10@v7-v2": _row(0.74, 0.42), "seed9@v5-v2": _row(0.75, 0.40), "seed9@v7-v2": _row(0.72, 0.30)}
    variant = {k: _row(r["f1"], r["ap50"]["Straight_Knife"] + 0.06) for k, r in base.items()}
    verdict, lines = decision.decide(base, variant, "Straight_Knife", 0.05, 0.03, 0.10, 3)
    assert verdict == "the variant passes"
    assert [line.split(" | ")[0] for line in lines[2:8:2]] == ["| seed9@v5-v2", "| seed9@v7-v2", "| seed10@v7-v2"]
    assert decision.decide(base, variant, "Straight_Knife", 0.05, 0.03, 0.10, 4)[0] == "undecided (3 of 4 seeds in)"
