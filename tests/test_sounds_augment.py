"""The pooled model's levers: concatenation and patch-mix augmentation, test-time shifts, inner-CV selection."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from rarespot.sounds.augment import concat_cycles, mix_cycles, splice  # noqa: E402
from rarespot.sounds.features import FeatureConfig  # noqa: E402
from rarespot.sounds.torch_model import ModelConfig, build_model  # noqa: E402
from rarespot.sounds.train import SoundsTrainConfig, fit, fit_pooled_head, inner_cv_pooled, select_pooled  # noqa: E402

H, W = 8, 16


def images(n: int) -> np.ndarray:
    """Image i is filled with i, plus the time column index / 100, so every column says where it came from."""
    return (np.arange(n, dtype=np.float32)[:, None, None, None] + np.arange(W, dtype=np.float32) / 100) * np.ones((1, 3, H, 1), np.float32)


def sources(row: np.ndarray) -> tuple[int, int, int]:
    """(first image, second image, cut) of a spliced row of ``images``."""
    ids = np.floor(row[0, 0] + 1e-4).astype(int)
    cut = int(np.argmax(ids != ids[0])) if np.any(ids != ids[0]) else W
    return int(ids[0]), int(ids[-1]), cut


def test_splice_takes_the_start_of_each_image():
    a, b = images(2)
    out = splice(a, b, 5)
    np.testing.assert_array_equal(out[..., :5], a[..., :5])
    np.testing.assert_array_equal(out[..., 5:], b[..., : W - 5])
    np.testing.assert_array_equal(splice(a, b, 0), b)
    with pytest.raises(ValueError, match="cut 17 is outside"):
        splice(a, b, W + 1)


# 12 cycles, 4 patients: patient p holds cycles 3p..3p+2.
Y = np.array([0, 1, 2, 0, 1, 3, 0, 1, 2, 3, 3, 2])
G = np.repeat(np.arange(4), 3)


def test_concat_other_patient_pairs_same_class_cycles_of_two_patients():
    x_new, y_new = concat_cycles(images(12), Y, G, 1.0, seed=0)
    # one synthetic cycle per real cycle of each abnormal class: crackle 3, wheeze 3, both 3
    assert np.bincount(y_new, minlength=4).tolist() == [0, 3, 3, 3]
    for row, label in zip(x_new, y_new):
        i, j, cut = sources(row)
        assert cut == W // 2 and Y[i] == Y[j] == label and G[i] != G[j]
    again, _ = concat_cycles(images(12), Y, G, 1.0, seed=0)
    np.testing.assert_array_equal(x_new, again)  # seeded


def test_concat_same_patient_and_both_from_parts():
    x_new, y_new = concat_cycles(images(12), Y, G, 1.0, pairing="same_patient", both_from_parts=True, seed=1)
    # same patient, same class: only patient 3 has two cycles of one class (both, cycles 9 and 10), so crackle and
    # wheeze cannot be paired; "both" gets 3 concatenations plus 3 from a crackle and a wheeze of one patient (0 or 2)
    assert np.bincount(y_new, minlength=4).tolist() == [0, 0, 0, 6]
    parts = []
    for row in x_new:
        i, j, cut = sources(row)
        assert cut == W // 2 and G[i] == G[j] and i != j
        parts.append(tuple(sorted((Y[i], Y[j]))))
    assert sorted(parts) == [(1, 2)] * 3 + [(3, 3)] * 3
    none, y_none = concat_cycles(images(12), Y, G, 0.0)
    assert none.shape == (0, 3, H, W) and y_none.shape == (0,)


def test_mix_cycles_joins_two_patients_labelled_by_their_time_share():
    x_new, y1, y2, lam = mix_cycles(images(12), Y, G, 0.5, seed=0)
    assert len(x_new) == 6
    for row, a, b, share in zip(x_new, y1, y2, lam):
        i, j, cut = sources(row)
        assert G[i] != G[j] and (Y[i], Y[j]) == (a, b)
        assert share == cut / W and 0.25 <= share <= 0.75


def test_weighted_head_equals_the_balanced_fit_of_the_same_rows():
    """Patch-mix rows enter the fit as weighted rows; a row split into two halves of weight 0.5 with the same label
    is the same as the row once, so the weighted path must give scikit-learn's class_weight="balanced" fit."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((60, 5)), np.arange(60) % 3
    z[:, 0] += y
    cfg = SoundsTrainConfig()
    real, syn = slice(0, 40), slice(40, 60)
    head = fit_pooled_head(z[real], y[real], np.concatenate([z[syn], z[syn]]), np.concatenate([y[syn], y[syn]]),
                           np.full(40, 0.5), cfg)
    mean, scale = z[real].mean(0), z[real].std(0)
    ref = LogisticRegression(C=cfg.head_c, class_weight="balanced", max_iter=5000).fit((z - mean) / scale, y)
    np.testing.assert_allclose(head["weight"][:3], ref.coef_, atol=1e-4)
    np.testing.assert_allclose(head["bias"][:3], ref.intercept_, atol=1e-4)
    assert head["bias"][3] == -1e4  # "both" never seen: never predicted


def _pooled(tta: int, pretrained: bool = False):
    cfg = ModelConfig(variant="pooled", pretrained_embedding=pretrained, image_size=(32, 64), tta_shifts=tta)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.02)  # moderate logits: no probability near the 1e-12 floor of the log
        model.offset.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0]))
    return model


def test_tta_is_the_mean_probability_over_circular_shifts():
    x = torch.randn(3, 3, 32, 64)
    plain, tta = _pooled(1), _pooled(4)
    tta.load_state_dict(plain.state_dict())
    # MFCC mean and std over time do not change with a circular shift: TTA gives the plain model's log-probabilities
    torch.testing.assert_close(tta(x), torch.log_softmax(plain(x), dim=1), atol=1e-5, rtol=0)


def test_tta_with_the_pretrained_embedding_averages_shifted_probabilities():
    pytest.importorskip("efficientnet_lite_pytorch")
    x = torch.randn(2, 3, 32, 64)
    plain, tta = _pooled(1, True), _pooled(2, True)
    tta.load_state_dict(plain.state_dict())
    expected = (torch.softmax(plain(x), 1) + torch.softmax(plain(torch.roll(x, 32, dims=3)), 1)) / 2
    torch.testing.assert_close(tta(x), torch.log(expected), atol=1e-5, rtol=0)
    assert not torch.allclose(tta(x), torch.log_softmax(plain(x), 1), atol=1e-4)  # the embedding does see the shift


def test_select_pooled_rule():
    recs = [{"candidate": 0, "tta": 1, "bias": 0.0, "se": 0.40, "sp": 0.60, "score": 0.50},
            {"candidate": 0, "tta": 1, "bias": 1.0, "se": 0.20, "sp": 0.98, "score": 0.59},  # best Score, Se too low
            {"candidate": 1, "tta": 1, "bias": 0.5, "se": 0.35, "sp": 0.75, "score": 0.55},
            {"candidate": 2, "tta": 1, "bias": 0.5, "se": 0.36, "sp": 0.74, "score": 0.55}]  # tie: the earlier wins
    assert select_pooled(recs) is recs[2]
    assert select_pooled(recs, min_se=0.5) is recs[1]  # nothing reaches the floor: the best Score


def _separable(n_patients=8, per=12, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(4), n_patients * per // 4)
    x = rng.standard_normal((len(y), 3, 32, 64)).astype(np.float32)
    x[:, 0, :4] += 2.0 * (y[:, None, None] % 2 == 1)  # crackle, both: low MFCC rows up
    x[:, 0, 4:8] += 2.0 * (y[:, None, None] >= 2)  # wheeze, both
    return x, y, np.repeat(np.arange(n_patients), per)


def test_inner_cv_scores_every_candidate_bias_and_tta():
    x, y, g = _separable()
    base = SoundsTrainConfig(features=FeatureConfig(image_size=(32, 64)), model=ModelConfig(variant="pooled", pretrained_embedding=False))
    cands = [base, base.model_copy(update={"concat_augment": 1.0}), base.model_copy(update={"mix_augment": 0.5})]
    recs = inner_cv_pooled(x, y, g, cands, biases=(0.0, 1.0), tta=(1, 2), n_splits=4)
    assert len(recs) == 3 * 2 * 2
    assert {(r["candidate"], r["tta"], r["bias"]) for r in recs} == {(c, t, b) for c in range(3) for t in (1, 2) for b in (0.0, 1.0)}
    # the classes are separable in the MFCC statistics: perfect at bias 0; +1 on "normal" only turns abnormal into normal
    assert all(r["score"] == 1.0 for r in recs if r["bias"] == 0.0)
    assert all(r["sp"] == 1.0 and r["se"] < 1.0 for r in recs if r["bias"] == 1.0)
    plain = {(r["candidate"], r["bias"]): r["score"] for r in recs if r["tta"] == 1}
    assert all(r["score"] == plain[r["candidate"], r["bias"]] for r in recs if r["tta"] == 2)  # no embedding: shifts change nothing
    with pytest.raises(ValueError, match="same features and model"):
        inner_cv_pooled(x, y, g, [base, base.model_copy(update={"model": ModelConfig(variant="cnn")})])


def test_fit_pooled_with_concatenation_and_no_validation(tmp_path):
    x, y, g = _separable(per=8)
    cfg = SoundsTrainConfig(features=FeatureConfig(image_size=(32, 64)), model=ModelConfig(variant="pooled", pretrained_embedding=False),
                      concat_augment=0.5, concat_both=True, select="fixed")
    lines = []
    result = fit(x, y, x[:0], y[:0], cfg, tmp_path, groups_train=g, log=lines.append)
    # 16 cycles of each class: 8 synthetic crackle, wheeze and both, and 8 "both" from a crackle and a wheeze
    assert "64 training / 0 validation cycles, class counts [16, 16, 16, 16], 32 synthetic rows (classes [0, 8, 8, 16])" in lines[0]
    assert np.isnan(result.best_score) and (tmp_path / "best.pt").is_file()
    from rarespot.sounds.predict import SoundClassifier

    clf = SoundClassifier.load(result.checkpoint, device="cpu")
    assert clf.config.concat_augment == 0.5 and (clf.predict_features(x).argmax(1) == y).mean() > 0.9


def test_default_selects_by_inner_cv_on_the_training_patients(tmp_path):
    import json

    from rarespot.sounds.predict import SoundClassifier
    from rarespot.sounds.train import POOLED_LEVERS

    x, y, g = _separable(per=8)
    cfg = SoundsTrainConfig(features=FeatureConfig(image_size=(32, 64)), model=ModelConfig(variant="pooled", pretrained_embedding=False))
    assert cfg.select == "inner_cv"
    lines = []
    result = fit(x, y, x[:8], y[:8], cfg, tmp_path, groups_train=g, log=lines.append)
    sel = json.loads((tmp_path / "selection.json").read_text())
    assert len(sel["records"]) == len(POOLED_LEVERS) * 2 * 6 and sel["levers"][0] == "none"
    assert result.history[0]["selection"]["lever"] == sel["lever"] and "chose" in lines[0]
    clf = SoundClassifier.load(result.checkpoint, device="cpu")
    # the checkpoint holds the chosen settings, fixed
    assert clf.config.select == "fixed" and clf.config.normal_bias == sel["bias"] and clf.config.model.tta_shifts == sel["tta"]
    assert dict(POOLED_LEVERS)[sel["lever"]] == {k: getattr(clf.config, k) for k in dict(POOLED_LEVERS)[sel["lever"]]}
    only_bias = fit(x, y, x[:8], y[:8], cfg.model_copy(update={"select_grid": "bias"}), tmp_path / "b", groups_train=g, log=lambda m: None)
    assert only_bias.history[0]["selection"]["lever"] == "none" and only_bias.history[0]["selection"]["tta"] == 1
    with pytest.warns(UserWarning, match="needs the patients of the training cycles and at least 4 of them \\(none given\\)"):
        fit(x, y, x[:8], y[:8], cfg, tmp_path / "c", log=lambda m: None)
