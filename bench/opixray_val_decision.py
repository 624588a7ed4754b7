"""Apply a validation-side decision rule to two sets of ``bench_opixray_recipe.py --val-only`` runs.

The rule (docs/study.md, "Recipe v5 candidate", written before the runs): the variant passes if, on the
validation images, the rare class's AP50 is above the base's in every seed both have run and by at least
``--min-gain`` on their mean, the variant's mean pooled F1 is at most ``--max-f1-loss`` below the base's,
and no other class's mean AP50 falls by more than ``--max-other-loss``. Only seeds present in both folders
count; the verdict says "undecided" while fewer than ``--seeds-needed`` of them are in, unless the variant's
rare class is already below the base's in one of them (that check cannot be won back). Runs rescored from several
studies (``bench_opixray_recipe.py --val-only --rescore --runs-from``) are keyed seed and study, and count one each.

    python bench/opixray_val_decision.py studies/opixray_v5_val/v2 studies/opixray_v5_val/yolo-backbone
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(out: Path) -> dict[str, dict]:
    path = out / "results_val.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no validation results (run bench_opixray_recipe.py --val-only --out {out} first)")
    return {key.split("/")[1]: row for key, row in json.loads(path.read_text()).items()}


def _run_order(name: str) -> tuple[int, str]:
    """"seed9" or, for runs rescored from several studies, "seed9@opixray_v5_val-v2": by seed, then study."""
    seed, _, study = name.partition("@")
    return int(seed.removeprefix("seed")), study


def decide(base: dict[str, dict], variant: dict[str, dict], rare: str, min_gain: float, max_f1_loss: float,
           max_other_loss: float, seeds_needed: int) -> tuple[str, list[str]]:
    """(verdict, markdown lines): "the variant passes", "... fails" or "undecided (n of N seeds in)"."""
    seeds = sorted(set(base) & set(variant), key=_run_order)
    classes = list(next(iter(base.values()))["ap50"]) if base else []
    lines = ["| seed | arm | epochs | F1 (pooled) | mAP50 | " + " | ".join(f"{c} AP50" for c in classes) + " |",
             "|---|---|---|---|---|" + "---|" * len(classes)]
    for seed in seeds:
        for name, rows in (("base", base), ("variant", variant)):
            r = rows[seed]
            lines.append(f"| {seed} | {name} | {r['epoch']} | {r['f1']:.3f} | {r['map50']:.3f} | "
                         + " | ".join(f"{r['ap50'][c]:.3f}" for c in classes) + " |")
    if not seeds:
        return f"undecided (0 of {seeds_needed} seeds in)", lines
    mean = {name: {"f1": np.mean([rows[s]["f1"] for s in seeds]),
                   **{c: np.mean([rows[s]["ap50"][c] for s in seeds]) for c in classes}}
            for name, rows in (("base", base), ("variant", variant))}
    every_seed = all(variant[s]["ap50"][rare] > base[s]["ap50"][rare] for s in seeds)
    gain = mean["variant"][rare] - mean["base"][rare]
    f1_change = mean["variant"]["f1"] - mean["base"]["f1"]
    others = {c: mean["variant"][c] - mean["base"][c] for c in classes if c != rare}
    checks = [
        (f"{rare} AP50 above the base's in every seed", every_seed),
        (f"{rare} AP50 gain on the mean {gain:+.3f} (at least {min_gain})", gain >= min_gain),
        (f"pooled F1 change on the mean {f1_change:+.3f} (at least -{max_f1_loss})", f1_change >= -max_f1_loss),
        ("other classes' mean AP50 change " + ", ".join(f"{c} {d:+.3f}" for c, d in others.items())
         + f" (none below -{max_other_loss})", all(d >= -max_other_loss for d in others.values())),
    ]
    lines += ["", *(f"- {'yes' if ok else 'NO'}: {text}" for text, ok in checks)]
    if len(seeds) < seeds_needed:
        if not every_seed:  # "above the base in every seed" is lost for good, whatever the other seeds show
            return f"the variant fails (with {len(seeds)} of {seeds_needed} seeds in: below the base in a seed)", lines
        return f"undecided ({len(seeds)} of {seeds_needed} seeds in)", lines
    return ("the variant passes" if all(ok for _, ok in checks) else "the variant fails"), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="--out folder of the base's --val-only runs")
    parser.add_argument("variant", type=Path, help="--out folder of the variant's --val-only runs")
    parser.add_argument("--rare", default="Straight_Knife")
    parser.add_argument("--min-gain", type=float, default=0.05)
    parser.add_argument("--max-f1-loss", type=float, default=0.03)
    parser.add_argument("--max-other-loss", type=float, default=0.10)
    parser.add_argument("--seeds-needed", type=int, default=2)
    args = parser.parse_args()
    verdict, lines = decide(load(args.base), load(args.variant), args.rare, args.min_gain, args.max_f1_loss,
                            args.max_other_loss, args.seeds_needed)
    print("\n".join([f"{args.variant} against {args.base}, validation images only:", "", *lines, "",
                     f"Verdict: {verdict}."]))


if __name__ == "__main__":
    main()
