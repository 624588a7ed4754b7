"""rarespot.sounds.torch_model: CBAM equations, branch independence, variants, local weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from rarespot.errors import InputError  # noqa: E402
from rarespot.sounds.torch_model import (  # noqa: E402
    CBAM,
    VARIANTS,
    BranchConv,
    ChannelAttention,
    ModelConfig,
    SpatialAttention,
    build_model,
    load_encoder_weights,
)

TINY = dict(image_size=(16, 32), patch_size=8, depth=1, embed_dim=32, num_heads=2, cnn_width=4)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_channel_attention_is_eq_11():
    cam = ChannelAttention(8, reduction=4)
    x = torch.randn(2, 8, 5, 6)
    mlp = cam.mlp
    expected = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(cam(x), expected)
    assert cam(x).shape == (2, 8, 1, 1)


def test_spatial_attention_is_eq_12():
    sam = SpatialAttention(7)
    x = torch.randn(2, 8, 5, 6)
    pooled = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True).values], 1)
    torch.testing.assert_close(sam(x), torch.sigmoid(torch.nn.functional.conv2d(pooled, sam.conv.weight, sam.conv.bias, padding=3)))


def test_cbam_applies_channel_then_spatial():
    cbam = CBAM(3, reduction=16)
    x = torch.randn(2, 3, 6, 6)
    after_channel = x * cbam.channel(x)
    torch.testing.assert_close(cbam(x), after_channel * cbam.spatial(after_channel))


def test_branches_keep_size_and_channels_apart():
    conv = BranchConv(3, 2).eval()
    x = torch.randn(1, 3, 10, 12)
    y = conv(x)
    assert y.shape == (1, 6, 10, 12)
    x2 = x.clone()
    x2[:, 2] += 5.0  # change only the CQT channel
    y2 = conv(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])  # MFCC and Mel branches unchanged
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_forward_and_backward(variant):
    pretrained = variant.startswith("effnet") or variant == "pooled"
    if pretrained:
        pytest.importorskip("efficientnet_lite_pytorch")
    size = (32, 64) if pretrained else (16, 32)  # EfficientNet's stride 32
    model = build_model(ModelConfig(variant=variant, **{**TINY, "image_size": size}))
    x = torch.randn(3, 3, *size)
    out = model(x)
    assert out.shape == (3, 4)
    out.sum().backward()


def test_variants_differ_in_their_parts():
    vit = build_model(ModelConfig(variant="vit", **TINY))
    conv = build_model(ModelConfig(variant="conv_vit", **TINY))
    seed = build_model(ModelConfig(variant="conv_cbam_vit", **TINY))
    assert isinstance(vit.conv, torch.nn.Identity) and isinstance(vit.attention, torch.nn.Identity)
    assert isinstance(conv.conv, BranchConv) and isinstance(conv.attention, torch.nn.Identity)
    assert isinstance(seed.conv, BranchConv) and isinstance(seed.attention, CBAM)
    assert seed.encoder.patch_embed.num_patches == (16 // 8) * (32 // 8)
    assert len(seed.encoder.blocks) == 1 and seed.encoder.embed_dim == 32


def test_bad_encoder_name():
    with pytest.raises(Exception, match="no_such_vit"):
        build_model(ModelConfig(variant="vit", encoder="no_such_vit", **TINY))


def test_load_local_encoder_weights(tmp_path):
    source = build_model(ModelConfig(variant="vit", **{**TINY, "image_size": (32, 32)}))
    path = tmp_path / "deit.pth"
    torch.save({"model": source.encoder.state_dict()}, path)  # DeiT release checkpoints wrap the dict in "model"
    target = build_model(ModelConfig(variant="conv_cbam_vit", **TINY))
    info = load_encoder_weights(target, path)
    assert info["loaded"] > 0
    torch.testing.assert_close(target.encoder.blocks[0].attn.qkv.weight, source.encoder.blocks[0].attn.qkv.weight)
    # Position embeddings were resampled from 4x4 to 2x4 patches by timm.
    assert target.encoder.pos_embed.shape[1] == 1 + 8


def test_load_weights_head_of_another_size_is_skipped(tmp_path):
    source = build_model(ModelConfig(variant="vit", **{**TINY, "num_classes": 10}))
    path = tmp_path / "w.pt"
    torch.save(source.encoder.state_dict(), path)
    info = load_encoder_weights(build_model(ModelConfig(variant="vit", **TINY)), path)
    assert info["skipped_head"] is True


def test_load_weights_errors_name_the_file(tmp_path):
    model = build_model(ModelConfig(variant="conv_cbam_vit", **TINY))
    wide = build_model(ModelConfig(variant="vit", **{**TINY, "embed_dim": 64}))
    torch.save(wide.encoder.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(InputError, match="wide.pt: weights do not fit deit_tiny_patch16_224"):
        load_encoder_weights(model, tmp_path / "wide.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(InputError, match="junk.pt: not a PyTorch weights file"):
        load_encoder_weights(model, tmp_path / "junk.pt")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: no parameter of deit_tiny_patch16_224 found"):
        load_encoder_weights(model, tmp_path / "other.pt")
    with pytest.raises(InputError, match="absent.pt: weights file not found"):
        load_encoder_weights(model, tmp_path / "absent.pt")
    with pytest.raises(InputError, match="transformer variants, not the CNN"):
        load_encoder_weights(build_model(ModelConfig(variant="cnn", **TINY)), tmp_path / "wide.pt")


@pytest.mark.parametrize("variant", ["effnet", "effnet_cbam_vit"])
def test_a_frozen_encoder_stays_in_eval_mode_while_the_head_trains(variant):
    pytest.importorskip("efficientnet_lite_pytorch")
    for freeze in (True, False):
        model = build_model(ModelConfig(variant=variant, freeze_encoder=freeze, **{**TINY, "image_size": (32, 64)}))
        model.train()
        assert model.training and model.encoder.training is not freeze
        assert all(p.requires_grad is not freeze for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model(ModelConfig(variant=variant, **{**TINY, "image_size": (48, 64)}))
