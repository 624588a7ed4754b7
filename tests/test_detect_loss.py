"""The imbalance-aware YOLO criterion on a tiny yolo11n (nc=3, built from its yaml, no download)."""

from __future__ import annotations

import pytest
import torch

from rarespot.detect.loss import CLS_LOSSES, ElementwiseClsLoss, ImbalanceDetectionLoss, build_detection_loss

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    m.args = get_cfg()  # the hyperparameters (box/cls/dfl gains) the criterion reads
    m.train()
    return m


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64)


def _batch(classes):
    """Two images, one object each, normalised xywh boxes as Ultralytics' dataloader gives them."""
    return {
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[float(classes[0])], [float(classes[1])]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.35, 0.4, 0.3, 0.5]]),
    }


@pytest.fixture(scope="module")
def preds(model, images):
    with torch.no_grad():
        return model(images)


def test_bce_is_ultralytics_own_loss(model):
    from ultralytics.utils.loss import v8DetectionLoss

    crit = build_detection_loss(model, "bce")
    assert type(crit) is v8DetectionLoss


@pytest.mark.parametrize("cls_loss", CLS_LOSSES)
def test_forward_backward_runs(model, images, cls_loss):
    crit = build_detection_loss(model, cls_loss, class_counts=[100, 10, 1])
    model.zero_grad()
    loss, items = crit(model(images), _batch([0, 2]))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert set(items) == {"box_loss", "cls_loss", "dfl_loss"}


def test_focal_gamma0_no_alpha_equals_bce(model, preds):
    batch = _batch([0, 1])
    bce_loss, _ = build_detection_loss(model, "bce")(preds, batch)
    focal_loss, _ = build_detection_loss(model, "focal", alpha=None, gamma=0.0)(preds, batch)
    torch.testing.assert_close(focal_loss, bce_loss)
    # And cb-bce with beta = 0 (all weights one) is BCE too.
    cb0, _ = build_detection_loss(model, "cb-bce", beta=0.0, class_counts=[100, 10, 1])(preds, batch)
    torch.testing.assert_close(cb0, bce_loss)


def test_focal_shrinks_cls_term_only(model, preds):
    batch = _batch([0, 1])
    bce_loss, _ = build_detection_loss(model, "bce")(preds, batch)
    focal_loss, _ = build_detection_loss(model, "focal", alpha=None, gamma=2.0)(preds, batch)
    assert focal_loss[1] < bce_loss[1]  # easy background anchors down-weighted
    torch.testing.assert_close(focal_loss[[0, 2]], bce_loss[[0, 2]])  # box and DFL untouched


def test_class_balanced_weights_move_cls_term_the_expected_way(model, preds):
    counts = [1000, 100, 1]  # class 2 rare (weight > 1), class 0 frequent (weight < 1)
    bce = build_detection_loss(model, "bce")
    cb = build_detection_loss(model, "cb-bce", beta=0.999, class_counts=counts)
    rare, frequent = _batch([2, 2]), _batch([0, 0])
    assert cb(preds, rare)[0][1] > bce(preds, rare)[0][1]
    assert cb(preds, frequent)[0][1] < bce(preds, frequent)[0][1]
    torch.testing.assert_close(cb(preds, rare)[0][[0, 2]], bce(preds, rare)[0][[0, 2]])


def test_elementwise_cls_weights_foreground_anchors_only():
    crit = ElementwiseClsLoss(gamma=0.0, alpha=None, class_weights=[0.5, 2.0])
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[0.0, 0.0], [0.7, 0.0], [0.0, 0.4]]])  # background, class 0, class 1
    out = crit(pred, target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
    torch.testing.assert_close(out[0, 0], bce[0, 0])
    torch.testing.assert_close(out[0, 1], 0.5 * bce[0, 1])
    torch.testing.assert_close(out[0, 2], 2.0 * bce[0, 2])


def test_bad_configs_rejected(model):
    with pytest.raises(ValueError, match="cls_loss"):
        build_detection_loss(model, "ohem")
    with pytest.raises(ValueError, match="class_counts"):
        build_detection_loss(model, "cb-focal")
    with pytest.raises(ValueError, match="3 classes"):
        build_detection_loss(model, "cb-bce", class_counts=[1, 2])


def test_end2end_head_gets_wrapped():
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.loss import E2ELoss

    m = DetectionModel("yolo26n.yaml", nc=3, verbose=False)
    m.args = get_cfg()
    crit = build_detection_loss(m, "cb-focal", class_counts=[5, 3, 1])
    assert isinstance(crit, E2ELoss)
    assert isinstance(crit.one2one, ImbalanceDetectionLoss)
    m.train()
    loss, _ = crit(m(torch.rand(2, 3, 64, 64)), _batch([0, 2]))
    assert torch.isfinite(loss).all()
