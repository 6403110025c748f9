import pytest
import torch
from torch import nn

from cvapps.backbones import BACKBONES, backbones_with, build_backbone, list_backbones, register_backbone
from cvapps.errors import ConfigError, ShapeError

EXPECTED = {"segnet_basic", "resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
            "efficientnet_b0", "vgg16_bn", "efficientnet_lite0"}


def test_registry_has_every_required_backbone():
    assert EXPECTED <= set(list_backbones())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backbone_contract(name):
    """Every entry builds, and its features honour feature_info on a non-square input."""
    b = build_backbone(name).eval()
    info = b.feature_info
    strides = [f.stride for f in info]
    assert strides == sorted(strides) and strides[-1] == (16 if name == "segnet_basic" else 32)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        feats = b(x)
    assert len(feats) == len(info)
    for f, spec in zip(feats, info):
        assert f.shape == (2, spec.channels, 96 // spec.stride, 128 // spec.stride), (name, spec)
    assert b.out_channels == info[-1].channels
    assert len(b.stages()) == len(info)
    stage_params = sum(p.numel() for s in b.stages() for p in s.parameters())
    assert stage_params == sum(p.numel() for p in b.parameters())  # stages cover the whole backbone


def test_wrong_input_shape_raises_shape_error():
    with pytest.raises(ShapeError, match=r"expects \(B, 3, H, W\)"):
        build_backbone("mobilenet_v2")(torch.randn(3, 64, 64))


def test_duplicate_registration_is_loud():
    with pytest.raises(ValueError, match="duplicate backbone name 'resnet18'"):
        register_backbone("resnet18")(lambda: None)


def test_unknown_backbone_and_kwargs():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet19'"):
        build_backbone("resnet19")
    with pytest.raises(ConfigError, match=r"unknown backbone options \[.width.\]"):
        build_backbone("resnet18", width=2)


def test_vgg_exposes_pool_indices_that_unpool():
    assert backbones_with("pool_indices") == ["segnet_basic", "vgg16_bn"]
    assert BACKBONES.get("vgg16_bn").capabilities()["pool_indices"]
    b = build_backbone("vgg16_bn").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats, pools = b.forward_with_pool_indices(x)
        plain = b(x)
    assert len(pools) == 5
    for a, c in zip(feats, plain):
        assert torch.equal(a, c)
    idx, size = pools[-1]
    up = nn.functional.max_unpool2d(feats[-1], idx, 2, 2, output_size=size)
    assert up.shape[-2:] == size
