"""ICBHI 2017 lung-sound benchmark: patient-wise k-fold CV of the seed model, its ablations and a CNN baseline.

Data: the per-cycle manifest (cycles.csv: every cycle of the single-channel
recordings of the official TRAIN split). Each fold's training part is split again
patient-wise (20 % of its patients) for early stopping on the ICBHI score; the
held-out fold is scored once with the selected weights.

Resumable: one JSON per (model, fold) under --out; finished ones are skipped, an
interrupted one resumes from its last.pt. Runs fold-major (fold 0 of every model,
then fold 1, ...) so that whatever finishes before --deadline compares all
models on the same folds. Writes the markdown report (--report).

    python bench/bench_sounds.py --data ../shared/data/icbhi --out /tmp/rarespot_bench_sounds \
        --report docs/benchmarks/sounds.md --deadline 15:30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rarespot.metrics.icbhi import icbhi_scores
from rarespot.sounds.data import describe, load_manifest, patient_kfold, patient_split
from rarespot.sounds.features import FeatureConfig, extract_features
from rarespot.sounds.torch_model import ModelConfig, build_model, count_parameters
from rarespot.sounds.train import SoundsTrainConfig, fit

NOTES_MARKER = "<!-- hand-written notes below: kept when the report above is rewritten -->"

VARIANT_NAMES = {
    "pooled_effnet": "pooled MFCC statistics + frozen ImageNet EfficientNet-Lite0 embedding + logistic head (session 4 default: normal bias 0.5 fixed, fitted on 80 % of the training patients)",
    "pooled": "pooled MFCC statistics + logistic-regression head (no pretrained embedding)",
    "pooled_effnet_levers": "library default: pooled_effnet with lever, TTA and normal bias chosen by inner patient-wise CV on the training patients, refitted on all of them",
    "pooled_effnet_cv": "pooled_effnet, normal bias chosen per fold by inner patient-wise CV (no levers), fitted on all training patients",
    "effnet": "ImageNet EfficientNet-Lite0 fine-tuned (whole)",
    "effnet_cbam_vit": "ImageNet EfficientNet-Lite0 maps -> CBAM -> ViT",
    "conv_cbam_vit": "conv branches + CBAM + ViT (seed model)",
    "conv_vit": "conv branches + ViT (ablation)",
    "vit": "ViT alone (ablation)",
    "cnn": "small CNN (baseline)",
}


NESTED = ("pooled_effnet_levers", "pooled_effnet_cv")  # the library default (SoundsTrainConfig.select "inner_cv") and its control


def bench_config(variant: str, args) -> SoundsTrainConfig:
    features = FeatureConfig(sample_rate=args.sample_rate, n_bins=args.bins, n_fft=args.n_fft, hop_length=args.hop,
                             image_size=(args.height, args.width))
    if variant in NESTED:
        # The library default (SoundsTrainConfig()): lever, TTA and normal bias chosen by inner CV on the training patients.
        model = ModelConfig(variant="pooled", pretrained_embedding=True)
        return SoundsTrainConfig(features=features, model=model, head_c=args.head_c, select="inner_cv",
                           select_grid="levers" if variant == "pooled_effnet_levers" else "bias", threads=args.threads, device="cpu")
    if variant in ("pooled", "pooled_effnet"):
        # Session 4's default: no lever, a fixed normal bias (select "fixed"), with only the bench's shared settings set.
        model = ModelConfig(variant="pooled", pretrained_embedding=variant == "pooled_effnet")
        return SoundsTrainConfig(features=features, model=model, head_c=args.head_c, normal_bias=args.normal_bias, select="fixed",
                           threads=args.threads, device="cpu")
    model = ModelConfig(variant=variant, encoder="deit_tiny_patch16_224", patch_size=args.patch, depth=args.depth,
                        embed_dim=args.embed_dim, num_heads=args.heads, cnn_width=args.cnn_width)
    return SoundsTrainConfig(features=features, model=model, epochs=args.epochs, patience=args.patience, lr=args.lr,
                       warmup_epochs=1, batch_size=32, loss=args.loss, beta=args.beta, select_by=args.select_by,
                       mixup_alpha=args.mixup, sampler=args.sampler, threads=args.threads, device="cpu")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "icbhi")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rarespot_bench_sounds")
    ap.add_argument("--report", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "sounds.md")
    ap.add_argument("--variants", default="pooled_effnet,pooled,conv_cbam_vit,cnn,vit,conv_vit")
    ap.add_argument("--head-c", type=float, default=SoundsTrainConfig().head_c, help="pooled models: logistic-regression C")
    ap.add_argument("--normal-bias", type=float, default=SoundsTrainConfig().normal_bias,
                    help="pooled, pooled_effnet: log-odds added to 'normal' (the nested variants choose it by inner CV)")
    ap.add_argument("--device-check", action="store_true",
                    help="also train on the Meditron cycles of the patients never recorded with a Littmann and score the "
                         "Littmann cycles (and the same patients' Meditron cycles); pooled variants only")
    ap.add_argument("--ensemble", type=int, default=5, help="device check: models (one per inner validation split) averaged")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--loss", default="cb_ce", choices=["cb_ce", "cb_focal", "ce", "focal"])
    ap.add_argument("--beta", type=float, default=0.999, help="class-balanced loss beta")
    ap.add_argument("--select-by", default="score", choices=["score", "loss", "last"], help="early-stopping metric")
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    ap.add_argument("--sampler", default="shuffle", choices=["shuffle", "balanced"])
    # 4 kHz, not the seed's 16 kHz: at 16 kHz the empty band above 2 kHz identifies the 4 kHz devices (features.py).
    ap.add_argument("--sample-rate", type=int, default=4000)
    ap.add_argument("--bins", type=int, default=64)
    ap.add_argument("--n-fft", type=int, default=512)
    ap.add_argument("--hop", type=int, default=128)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--embed-dim", type=int, default=96)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--cnn-width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="feature-extraction processes")
    ap.add_argument("--throughput-cycles", type=int, default=0,
                    help="cycles extracted cold (fresh cache) to time throughput; 0 = all (a few hundred are too few to time worker start-up fairly)")
    ap.add_argument("--deadline", default=None, help="HH:MM UTC: start no new (model, fold) run after this")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default OUT/cache)")
    ap.add_argument("--skip-throughput", action="store_true", help="do not time feature extraction (a second process sharing --out)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    command = "python bench/bench_sounds.py " + " ".join(sys.argv[1:])

    cycles = load_manifest(args.data / "cycles.csv", split="train")
    print(describe(cycles), flush=True)
    folds = patient_kfold(cycles, args.folds, seed=0)
    labels = np.array([c.label for c in cycles])
    cfg0 = bench_config(variants[0], args)

    meta_path = args.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "logreg" not in meta:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feats = extract_features(cycles, cfg0.features, cache_dir=args.cache or args.out / "cache", n_jobs=args.jobs)
        meta["logreg"] = logistic_peer(feats, labels, folds)
        _write(meta_path, json.dumps(meta, indent=1))
    if not args.report_only:
        warnings.simplefilter("ignore")  # clipped-audio notes for ~40 clips; they are listed by `rarespot sounds train`
        if "throughput" not in meta and not args.skip_throughput:
            meta["throughput"] = measure_throughput(cycles[: args.throughput_cycles or None], cfg0.features, args.jobs)
            _write(meta_path, json.dumps(meta, indent=1))
        load_at_start = round(os.getloadavg()[0], 2)  # other work already running when this process began
        t0 = time.perf_counter()
        features = extract_features(cycles, cfg0.features, cache_dir=args.cache or args.out / "cache", n_jobs=args.jobs)
        print(f"features {features.shape} in {time.perf_counter() - t0:.1f}s (cached ones loaded)", flush=True)
        stopped = False
        for k, (train_idx, test_idx) in enumerate(folds):
            for variant in variants:
                result_path = args.out / f"{variant}_fold{k}.json"
                if result_path.is_file():
                    continue
                if args.deadline and _past(args.deadline):
                    print(f"deadline {args.deadline} UTC passed: not starting {variant} fold {k}", flush=True)
                    stopped = True
                    break
                if variant in NESTED:
                    run_nested(variant, k, train_idx, test_idx, cycles, features, labels, args, result_path)
                else:
                    run_one(variant, k, train_idx, test_idx, cycles, features, labels, args, result_path)
            if stopped:
                break
        if args.device_check:
            for variant in variants:
                path = args.out / f"{variant}_device.json"
                if variant.startswith("pooled") and not path.is_file():
                    _write(path, json.dumps(device_check(variant, cycles, features, labels, args), indent=1))
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else meta  # another process may have written it
        meta.setdefault("commands", [])
        if command not in meta["commands"]:
            meta["commands"].append(command)
        meta.setdefault("load_at_start", {})[command] = load_at_start
        _write(meta_path, json.dumps(meta, indent=1))
    write_report(args, variants, folds, cycles, labels, meta, command)
    return 0


def logistic_peer(features: np.ndarray, labels: np.ndarray, folds) -> list[dict]:
    """A classical peer on the same folds: class-balanced logistic regression on time-pooled features
    (per-bin mean and std over time of the three maps), no early stopping, no tuning."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pooled = np.concatenate([features.mean(3).reshape(len(features), -1), features.std(3).reshape(len(features), -1)], 1)
    out = []
    for k, (tr, te) in enumerate(folds):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, class_weight="balanced", max_iter=2000))
        model.fit(pooled[tr], labels[tr])
        s = icbhi_scores(labels[te], model.predict(pooled[te]))
        out.append({"fold": k, "se": s.se, "sp": s.sp, "score": s.score})
    return out


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _fmt_cpu(recs) -> str:
    cpu = [r["cpu_s"] for r in recs if "cpu_s" in r]
    return f"{np.mean(cpu):.0f}" if cpu else "n/a"


def _confusion_block(name, recs) -> str:
    from rarespot.metrics.icbhi import ICBHI_CLASSES

    cm = np.sum([np.asarray(r["confusion"]) for r in recs], axis=0)
    head = "| " + name + " | " + " | ".join(ICBHI_CLASSES) + " |\n|---|" + "---|" * len(ICBHI_CLASSES)
    return head + "\n" + "\n".join(f"| {ICBHI_CLASSES[i]} | " + " | ".join(str(int(v)) for v in row) + " |" for i, row in enumerate(cm)) + "\n"


def _device_section(args, variants) -> str:
    rows = []
    for v in variants:
        path = args.out / f"{v}_device.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        members = ", ".join(f"{100 * m['littmann']['score']:.1f}" for m in d["members"])
        for key, what in (("littmann", f"Littmann cycles ({d['littmann_cycles']})"),
                          ("meditron_same_patients", f"same patients, Meditron cycles ({d['meditron_same_patients_cycles']})")):
            s = d[key]
            rows.append(f"| {VARIANT_NAMES.get(v, v)} | {what} | {100 * s['se']:.2f} | {100 * s['sp']:.2f} | {100 * s['score']:.2f} | "
                        + (members if key == "littmann" else ", ".join(f"{100 * m[key]['score']:.1f}" for m in d["members"])) + " |")
    if not rows:
        return ""
    d = json.loads(next(args.out / f"{v}_device.json" for v in variants if (args.out / f"{v}_device.json").is_file()).read_text())
    return f"""
## Device held out (train on Meditron only)

Trained on the {d['train_cycles']} Meditron cycles of the patients never recorded with a Littmann; scored on every Littmann
cycle (patients {', '.join(d['held_patients'])}: Litt3200 and LittC2SE), and, with the same models, on those patients'
Meditron cycles. The held-out patients are unseen either way, so the gap between the two rows is the device.
Score of the ensemble (mean probability of {len(d['members'])} models, each early-stopped or scored on another
patient-wise validation split), then each model alone.

| model | scored on | Se | Sp | Score (ensemble) | Score per model |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def device_of(recording: str) -> str:
    return recording.rsplit("_", 1)[-1]


def device_check(variant, cycles, features, labels, args) -> dict:
    """Train on Meditron only, score another stethoscope.

    Every Littmann cycle of the subset comes from 3 patients (112 and 218: Litt3200; 226: LittC2SE) who were
    also recorded with the Meditron. Training leaves these patients out entirely, so the check is held out by
    device AND by patient; the same patients' Meditron cycles, scored by the same models, separate the two.
    ``args.ensemble`` models, each with another patient-wise validation split, are scored alone and averaged.
    """
    from rarespot.sounds.predict import SoundClassifier

    devices = np.array([device_of(c.recording) for c in cycles])
    patients = np.array([c.patient for c in cycles])
    littmann = np.flatnonzero(devices != "Meditron")
    held_patients = sorted(set(patients[littmann]))
    same_patients_meditron = np.flatnonzero((devices == "Meditron") & np.isin(patients, held_patients))
    train_idx = np.flatnonzero((devices == "Meditron") & ~np.isin(patients, held_patients))
    config = bench_config(variant, args)
    probs_l, probs_m, members = [], [], []
    for seed in range(args.ensemble):
        run_dir = args.out / "runs" / f"{variant}_device{seed}"
        if variant in NESTED:  # the library default: its inner CV chooses on the Meditron training patients only
            result = fit_inner_cv(train_idx, cycles, features, labels, config.model_copy(update={"select_seed": 200 + seed}), run_dir)
        else:
            inner_tr, inner_va = patient_split([cycles[i] for i in train_idx], 0.2, seed=seed)
            tr, va = train_idx[inner_tr], train_idx[inner_va]
            result = fit(features[tr], labels[tr], features[va], labels[va], config, run_dir,
                         progress=False, log=lambda m: print("  " + m, flush=True))
        clf = SoundClassifier.load(result.checkpoint, device="cpu")
        pl, pm = clf.predict_features(features[littmann]), clf.predict_features(features[same_patients_meditron])
        probs_l.append(pl)
        probs_m.append(pm)
        members.append({"seed": seed, "littmann": icbhi_scores(labels[littmann], pl.argmax(1)).as_dict(),
                        "meditron_same_patients": icbhi_scores(labels[same_patients_meditron], pm.argmax(1)).as_dict()})
    out = {
        "variant": variant, "train_cycles": int(len(train_idx)), "held_patients": held_patients,
        "littmann_cycles": int(len(littmann)), "meditron_same_patients_cycles": int(len(same_patients_meditron)),
        "littmann": icbhi_scores(labels[littmann], np.mean(probs_l, 0).argmax(1)).as_dict(),
        "meditron_same_patients": icbhi_scores(labels[same_patients_meditron], np.mean(probs_m, 0).argmax(1)).as_dict(),
        "members": members,
    }
    print(f"  DEVICE {variant}: Littmann Score {100 * out['littmann']['score']:.2f}, same patients on Meditron "
          f"{100 * out['meditron_same_patients']['score']:.2f}", flush=True)
    return out


def measure_throughput(cycles, config: FeatureConfig, jobs: int) -> dict:
    out = {}
    for n_jobs in sorted({1, jobs}):
        cache = Path(tempfile.mkdtemp(prefix="rarespot_tp_"))
        try:
            extract_features(cycles[:8], config, cache_dir=False, n_jobs=1, progress=False)  # librosa/numba warm-up
            t0 = time.perf_counter()
            extract_features(cycles, config, cache_dir=cache, n_jobs=n_jobs, progress=False)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            extract_features(cycles, config, cache_dir=cache, n_jobs=n_jobs, progress=False)
            warm = time.perf_counter() - t0
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        out[f"jobs{n_jobs}"] = {"cycles": len(cycles), "cold_s": cold, "cold_cycles_per_s": len(cycles) / cold,
                                "cached_s": warm, "cached_cycles_per_s": len(cycles) / warm}
        print(f"feature throughput, {n_jobs} job(s): {len(cycles) / cold:.1f} cycles/s cold, {len(cycles) / warm:.0f} cycles/s cached", flush=True)
    return out


def run_one(variant, k, train_idx, test_idx, cycles, features, labels, args, result_path: Path) -> None:
    config = bench_config(variant, args)
    train_cycles = [cycles[i] for i in train_idx]
    inner_tr, inner_va = patient_split(train_cycles, 0.2, seed=k)
    tr, va = train_idx[inner_tr], train_idx[inner_va]
    print(f"\n== {variant} fold {k + 1}/{args.folds}: train {len(tr)}, early-stop val {len(va)}, test {len(test_idx)}", flush=True)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = fit(features[tr], labels[tr], features[va], labels[va], config, args.out / "runs" / f"{variant}_fold{k}",
                 progress=False, log=lambda m: print("  " + m, flush=True))
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    _, scores = score_test_fold(result.checkpoint, features, labels, test_idx, k)
    record = {
        "variant": variant, "fold": k, **scores.as_dict(),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds_per_epoch": result.seconds_per_epoch,
        "wall_s": wall, "cpu_s": cpu, "load_avg": round(os.getloadavg()[0], 2), "val_score": result.best_score, "params": count_parameters(build_model(config.model)),
        "n_train": int(len(tr)), "n_val": int(len(va)), "n_test": int(len(test_idx)),
        "config": config.model_dump(mode="json"),
    }
    _write(result_path, json.dumps(record, indent=1))


def score_test_fold(checkpoint, features, labels, test_idx, k):
    """(classifier, ICBHI scores) of a fold's model on its test cycles, scored once."""
    from rarespot.sounds.predict import SoundClassifier

    clf = SoundClassifier.load(checkpoint, device="cpu")
    scores = icbhi_scores(labels[test_idx], clf.predict_features(features[test_idx]).argmax(1))
    print(f"  TEST fold {k}: {scores.summary()}", flush=True)
    return clf, scores


def fit_inner_cv(train_idx, cycles, features, labels, config, run_dir: Path):
    """The library default's fit on ``train_idx``: its inner patient-grouped CV chooses the settings on
    these cycles' patients only, then it refits on all of them (no separate validation cycles)."""
    groups = np.array([cycles[i].patient for i in train_idx])
    empty = np.zeros((0, *features.shape[1:]), np.float32)
    return fit(features[train_idx], labels[train_idx], empty, np.zeros(0, np.int64), config, run_dir,
               groups_train=groups, resume=False, progress=False, log=lambda m: print("  " + m, flush=True))


def run_nested(variant, k, train_idx, test_idx, cycles, features, labels, args, result_path: Path) -> None:
    """The library default: ``fit`` with ``select="inner_cv"`` chooses on the training patients only (inner
    patient-grouped 4-fold CV, seed 100 + fold; ``select_pooled``: best inner Score with inner Se >= 35), refits on
    every training patient, and the test fold is scored once."""
    config = bench_config(variant, args).model_copy(update={"select_seed": 100 + k})
    print(f"\n== {variant} fold {k + 1}/{args.folds}: fit (inner CV, then refit) on {len(train_idx)}, test {len(test_idx)}", flush=True)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = fit_inner_cv(train_idx, cycles, features, labels, config, args.out / "runs" / f"{variant}_fold{k}")
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    clf, scores = score_test_fold(result.checkpoint, features, labels, test_idx, k)
    record = {
        "variant": variant, "fold": k, **scores.as_dict(),
        "best_epoch": 1, "epochs_run": 1, "seconds_per_epoch": result.seconds_per_epoch,
        "wall_s": wall, "cpu_s": cpu, "load_avg": round(os.getloadavg()[0], 2),
        "val_score": result.history[0]["selection"]["score"], "params": count_parameters(build_model(clf.config.model)),
        "n_train": int(len(train_idx)), "n_val": 0, "n_test": int(len(test_idx)),
        "choice": result.history[0]["selection"], "config": clf.config.model_dump(mode="json"),
    }
    _write(result_path, json.dumps(record, indent=1))


def _nested_section(args, variants) -> str:
    """Per fold: what the inner CV chose, and each lever's inner-CV Score at its best bias with Se >= 35."""
    path = args.out / "runs" / "pooled_effnet_levers_fold{}" / "selection.json"
    inner = [json.loads(Path(str(path).format(k)).read_text()) for k in range(args.folds) if Path(str(path).format(k)).is_file()]
    if not inner or not any(v in NESTED for v in variants):
        return ""
    levers, tta = inner[0]["levers"], sorted({r["tta"] for r in inner[0]["records"]})

    def best(d, ci, t):
        ok = [r for r in d["records"] if r["candidate"] == ci and r["tta"] == t and r["se"] >= 0.35]
        return max(ok, key=lambda r: r["score"]) if ok else None

    lines = ["| outer fold | " + " | ".join(f"{name}, TTA {t}" for name in levers for t in tta) + " |",
             "|---|" + "---|" * (len(levers) * len(tta))]
    for k, d in enumerate(inner):
        cells = []
        for ci in range(len(levers)):
            for t in tta:
                b = best(d, ci, t)
                cells.append(f"{100 * b['score']:.1f} (b {b['bias']:g})" if b else "no bias reaches Se 35")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    chosen = []
    for v in variants:
        if v not in NESTED:
            continue
        for p in sorted(args.out.glob(f"{v}_fold*.json")):
            r = json.loads(p.read_text())
            c = r["choice"]
            chosen.append(f"| {v} | {r['fold']} | {c['lever']} | {c['tta']} | {c['bias']:g} | {100 * c['score']:.2f} | {100 * c['se']:.2f} | "
                          f"{100 * r['score']:.2f} | {100 * r['se']:.2f} | {r['cpu_s']:.0f} |")
    return f"""
## Inner cross-validation (training patients of each outer fold only)

`SoundsTrainConfig(select="inner_cv")` (the library default): inside each outer fold's training part, patient-grouped
4-fold CV (sklearn StratifiedGroupKFold, seed 100 + fold), out-of-fold predictions pooled over the 4 inner folds,
ICBHI Score over all of them. Every lever x TTA x normal bias {{0, 0.25, 0.5, 0.75, 1, 1.5}} is scored from the same fits.
Rule (`rarespot.sounds.train.select_pooled`, the same in every fold): the highest inner Score among the settings with
inner Se >= 35, else the highest Score. The chosen setting is refitted on all the fold's training patients and its
test fold scored once. `pooled_effnet_cv` is the control: the same, with no lever and no TTA (only the bias chosen).

Inner-CV Score (%) of each lever at its best bias among those with inner Se >= 35:

{chr(10).join(lines)}

What each nested variant chose, and its test fold:

| variant | fold | lever | TTA | normal bias | inner Score | inner Se | test Score | test Se | CPU s (inner CV + refit) |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(chosen)}
"""


def write_report(args, variants, folds, cycles, labels, meta, command) -> None:
    rows, per_fold, confusions = [], [], []
    results = {}
    for v in variants:
        recs = [json.loads(p.read_text()) for p in sorted(args.out.glob(f"{v}_fold*.json"))]
        results[v] = recs
    cfg = bench_config(variants[0], args)

    def ms(values):
        a = 100 * np.asarray(values, dtype=float)
        return f"{a.mean():.2f} ± {a.std(ddof=1) if len(a) > 1 else 0:.2f}" if len(a) else "n/a"

    for v in variants:
        recs = results[v]
        if not recs:
            rows.append(f"| {VARIANT_NAMES.get(v, v)} | none | n/a | n/a | n/a | | | | |")
            continue
        rows.append(
            f"| {VARIANT_NAMES.get(v, v)} | {','.join(str(r['fold']) for r in sorted(recs, key=lambda r: r['fold']))} | {ms([r['se'] for r in recs])} | {ms([r['sp'] for r in recs])} | "
            f"{ms([r['score'] for r in recs])} | {_fmt_params(recs[0]['params'])} | {np.mean([r['seconds_per_epoch'] for r in recs]):.1f} | "
            f"{np.mean([r['epochs_run'] for r in recs]):.1f} | {_fmt_cpu(recs)} |"
        )
        confusions.append(_confusion_block(VARIANT_NAMES.get(v, v), recs))
        for r in sorted(recs, key=lambda r: r["fold"]):
            rec = ", ".join(f"{k} {100 * x:.0f}" for k, x in r["per_class_recall"].items())
            per_fold.append(f"| {v} | {r['fold']} | {100 * r['se']:.2f} | {100 * r['sp']:.2f} | {100 * r['score']:.2f} | {rec} | {r['best_epoch']}/{r['epochs_run']} |")
    # The trivial peer: "normal" for every cycle, scored on the same folds.
    trivial = [icbhi_scores(labels[te], np.zeros(len(te), dtype=int)).score for _, te in folds]
    ratio = ""
    if "conv_cbam_vit" in variants and "cnn" in variants:
        common = {r["fold"] for r in results["conv_cbam_vit"]} & {r["fold"] for r in results["cnn"]}
        if common:
            s_seed = np.mean([r["score"] for r in results["conv_cbam_vit"] if r["fold"] in common])
            s_cnn = np.mean([r["score"] for r in results["cnn"] if r["fold"] in common])
            ratio = (f"Seed model / CNN baseline mean Score ratio on their {len(common)} common fold(s) "
                     f"{sorted(common)}: **{s_seed / s_cnn:.3f}** ({100 * s_seed:.2f} / {100 * s_cnn:.2f}).")
    default_variant = next((v for v in ("pooled_effnet_levers", "pooled_effnet") if v in variants), None)
    lr = meta.get("logreg", [])
    logreg_row = (f"| logistic regression on time-pooled features (classical peer) | all {len(lr)} | {ms([r['se'] for r in lr])} | "
                  f"{ms([r['sp'] for r in lr])} | {ms([r['score'] for r in lr])} | | | | |") if lr else ""
    for r in lr:
        per_fold.append(f"| logreg | {r['fold']} | {100 * r['se']:.2f} | {100 * r['sp']:.2f} | {100 * r['score']:.2f} | | |")
    tp = meta.get("throughput", {})
    tp_lines = [f"- {k.replace('jobs', '')} process(es): {d['cold_cycles_per_s']:.1f} cycles/s extracting ({d['cycles']} cycles in {d['cold_s']:.1f} s), "
                f"{d['cached_cycles_per_s']:.0f} cycles/s from the cache" for k, d in tp.items()]
    loads = meta.get("load_at_start", {})
    load_text = "; ".join(f"{v:g}" for v in loads.values()) or "not recorded"
    select_text = {"score": "best validation ICBHI Score", "loss": "lowest validation loss",
                   "last": "none: the last epoch is kept"}[args.select_by]
    fold_sizes = ", ".join(f"{len(te)}" for _, te in folds)
    target = ""
    if default_variant and results[default_variant] and lr:
        recs = results[default_variant]
        mean_score, mean_se = np.mean([r["score"] for r in recs]), np.mean([r["se"] for r in recs])
        peer = np.mean([r["score"] for r in lr])
        checks = [("mean Score >= 56", mean_score >= 0.56, f"{100 * mean_score:.2f}"),
                  ("at least 3 above the logistic-regression peer", mean_score >= peer + 0.03, f"{100 * (mean_score - peer):+.2f}"),
                  ("above 50 in every fold", all(r["score"] > 0.5 for r in recs), ", ".join(f"{100 * r['score']:.1f}" for r in sorted(recs, key=lambda r: r["fold"]))),
                  ("Se >= 35", mean_se >= 0.35, f"{100 * mean_se:.2f}")]
        target = (f"Targets of issue #15 for the library default ({VARIANT_NAMES[default_variant]}, folds "
                  f"{','.join(str(r['fold']) for r in recs)}):\n\n" +
                  "\n".join(f"- {name}: {'met' if ok else '**missed**'} ({value})" for name, ok, value in checks))
    text = f"""# Lung sounds (ICBHI 2017): patient-wise {args.folds}-fold cross-validation

Commands (run from the repository root; processes may share the output folder, each training some of the models,
then `--report-only` writes this file):

{chr(10).join('    ' + c for c in meta.get('commands', [command]))}

- Machine: {os.cpu_count()} CPU cores, no GPU; 1-minute load average when each command started (other work already
  running): {load_text}. torch threads per process: {args.threads}; feature extraction: {args.jobs} processes.
- Data: `{args.data}/cycles.csv`: {describe(cycles)}: every cycle of the single-channel recordings of
  the official TRAIN split (no multi-channel AKGC417L recordings), so these numbers are **not comparable** to published
  full-database / official 60-40 numbers (the seed reports Score 57.36 with ImageNet-pretrained DeiT-B on the official split).
- Folds: sklearn StratifiedGroupKFold by patient (seed 0), test fold sizes {fold_sizes} cycles; inside each training part,
  20 % of its patients are held out for early stopping ({select_text}; patience {args.patience}, at most {args.epochs} epochs).
  Folds completed before the deadline: listed per model in the table (of {args.folds}); a model with fewer folds is
  compared on fewer held-out patients, so compare per fold (second table) where the fold sets differ.
- Features: MFCC / log-Mel / log-CQT, {cfg.features.n_bins} bins, window {cfg.features.n_fft}, hop {cfg.features.hop_length},
  {cfg.features.sample_rate} Hz, {cfg.features.cycle_seconds:g} s repeat-padded cycles, CQT {cfg.features.cqt_fmin:g} Hz and up at
  {cfg.features.cqt_bins_per_octave()} bins/octave, each map resized to {args.height} x {args.width}; per-channel standardisation with training-fold statistics.
- `pooled*` models: class-balanced logistic regression (scikit-learn, C {args.head_c:g}) on the per-coefficient mean and std
  over time of the MFCC map (+ `pooled_effnet`: the frozen ImageNet EfficientNet-Lite0 stage-6 embedding, mean and max over
  time; its parameter count includes the frozen encoder), {args.normal_bias:g} added to the "normal" log-odds; one fit, no
  epochs, the validation patients are only scored. `effnet`: ImageNet EfficientNet-Lite0 fine-tuned whole, trained as below.
- `pooled_effnet_levers` = the library default (`SoundsTrainConfig()`, `select="inner_cv"`): the same features and head, with the
  lever (concatenation / patch-mix augmentation), test-time shifts and "normal" bias chosen per outer fold by inner
  patient-wise CV on that fold's training patients, then refitted on all of them (no early-stopping split);
  `pooled_effnet_cv` is its control (only the bias chosen). See "Inner cross-validation" below.
- The other models, from random initialisation (no pretrained weights): transformer = timm `deit_tiny_patch16_224` config
  **shrunk to fit 2 CPU cores**: depth {args.depth}, embed dim {args.embed_dim}, {args.heads} heads, patch {args.patch}
  ({(args.height // args.patch) * (args.width // args.patch)} tokens); conv branches 1 channel each (3x3, BN, ReLU); CBAM reduction 16;
  CNN baseline = 4 x (conv3x3-BN-ReLU-maxpool) widths {args.cnn_width}-{8 * args.cnn_width}.
- Training: AdamW lr {args.lr:g}, weight decay 0.05, 1 warm-up epoch then cosine, batch 32, loss {args.loss}
  (class-balanced beta {args.beta:g} for cb_*, `rarespot.imbalance.losses.ClassBalancedLoss`), {args.sampler} sampling,
  mixup alpha {args.mixup:g}, circular time shift + time/frequency masking.

## Held-out fold scores (mean ± std over folds, %)

| model | folds done | Se | Sp | Score | params | s / epoch (wall) | epochs run | CPU s / fold |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{logreg_row}
| "normal" for every cycle (trivial peer) | all {len(trivial)} | 0.00 ± 0.00 | 100.00 ± 0.00 | {ms(trivial)} | | | | |

{ratio}

{target}

Se counts an abnormal cycle as detected only when its exact class (crackle / wheeze / both) is predicted (official ICBHI rule).

## Confusion matrices (all test folds summed; rows = true, columns = predicted)

{chr(10).join(confusions)}
{_device_section(args, variants)}{_nested_section(args, variants)}
## Per fold

| model | fold | Se | Sp | Score | per-class recall (%) | best epoch / run |
|---|---|---|---|---|---|---|
{chr(10).join(per_fold)}

## Feature extraction throughput ({f"{tp['jobs1']['cycles']} cycles, fresh cache" if 'jobs1' in tp else 'not measured in this run'})

{chr(10).join(tp_lines) or '- not measured: this run had `--skip-throughput` (time it with `--throughput-cycles 1049`, all cycles, fresh cache)'}

Measured by the same command (`measure_throughput`), after a warm-up extraction of 8 cycles; cycles are 16-bit FLAC clips
at 4 or 16 kHz, resampled to {cfg.features.sample_rate} Hz, {cfg.features.cycle_seconds:g} s each.

Host: {platform.platform()}, Python {platform.python_version()}. Written {datetime.now(timezone.utc).isoformat(timespec='minutes')}.
"""
    # Hand-written notes after the marker survive a rewrite of the generated part.
    previous = args.report.read_text() if args.report.is_file() else ""
    if NOTES_MARKER in previous:
        text += "\n" + NOTES_MARKER + previous.split(NOTES_MARKER, 1)[1]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    _write(args.report, text)
    print(f"wrote {args.report}", flush=True)


def _cpu_seconds() -> float:
    """CPU time of this process (user + system): unlike wall time, barely inflated by other work on the machine."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _past(hhmm: str) -> bool:
    now = datetime.now(timezone.utc)
    h, m = (int(x) for x in hhmm.split(":"))
    return (now.hour, now.minute) >= (h, m)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
