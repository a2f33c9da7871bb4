"""The network of section 3.1-3.2: shapes, the mask equations, numerics, descriptors."""

from __future__ import annotations

import math

import pytest
import torch

from fmn_core.models import FeatureMaskNetwork, MixingNetwork, WeightsUnavailableError, fmn_descriptor, reshape_mask
from fmn_core.models.backbone import build_resnet, imagenet_weights_file
from fmn_core.models.fmn import feature_map_size


@pytest.mark.parametrize("input_size", [(256, 128), (224, 224), (128, 64)])
@pytest.mark.parametrize("masked_layer,stride", [("pool1", 4), ("res2", 4), ("res3", 8), ("res4", 16)])
def test_shapes_for_every_masked_layer_and_input(masked_layer, stride, input_size):
    torch.manual_seed(0)
    model = FeatureMaskNetwork(7, arch="resnet18", masked_layer=masked_layer, input_size=input_size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *input_size), return_maps=True)
    expected_mask = (math.ceil(input_size[0] / stride), math.ceil(input_size[1] / stride))
    assert tuple(out.mask.shape) == (2, *expected_mask)
    assert out.g.shape == out.l.shape == (2, 512)
    assert out.grn_logits.shape == out.lan_logits.shape == (2, 7)
    assert out.grn_map.shape == out.lan_map.shape
    # the LAN repeats the backbone from the masked layer on: the residual stages after it, up to res5
    assert len(model.lan_stages) == {"pool1": 4, "res2": 3, "res3": 2, "res4": 1}[masked_layer]


def test_paper_mask_sizes_for_resnet50():
    # Table 5: 56x56 at Pool1/Res2, 28x28 at Res3, 14x14 at Res4 for 224x224 input; 64x32 at pool1 for 256x128.
    assert feature_map_size((224, 224), "stem") == (56, 56)
    assert feature_map_size((224, 224), "res3") == (28, 28)
    assert feature_map_size((224, 224), "res4") == (14, 14)
    assert feature_map_size((256, 128), "stem") == (64, 32)
    model = FeatureMaskNetwork(751, arch="resnet50")  # Market-1501's training identities; any count would do
    assert model.mixing.transform.in_features == 2048  # g: Table 1's 2048-d GRN descriptor
    assert model.mixing.transform.out_features == 64 * 32


def test_mask_equations_on_a_hand_worked_example():
    # g as given (no standardisation), so eq. (1)'s W^T g can be worked by hand
    mixing = MixingNetwork(global_dim=2, mask_size=(2, 3), log_mask_max=3.0, normalize_global=False)  # h=2, w=3
    with torch.no_grad():
        mixing.transform.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0],
                                                    [-1.0, 0.0], [2.0, 0.0], [0.0, -3.0]]))
        mixing.transform.bias.zero_()
    g = torch.tensor([[1.0, 2.0]])
    # eq. (1): m' = ReLU(W^T g) = ReLU([1, 2, 3, -1, 2, -6]) = [1, 2, 3, 0, 2, 0]
    # eq. (2): column-major, k = h*j + i: column 0 = [m'0, m'1], column 1 = [m'2, m'3], column 2 = [m'4, m'5]
    # the bounded exponent of this implementation: B tanh(m'/B), B = 3 (mixing.py's docstring)
    exponent = torch.tensor([[[1.0, 3.0, 2.0], [2.0, 0.0, 0.0]]])
    expected = torch.exp(3.0 * torch.tanh(exponent / 3.0))
    mask = mixing.mask(g)
    assert torch.allclose(mask, expected)
    # eq. (3): every channel of f is multiplied by the same mask
    f = torch.arange(2 * 2 * 3, dtype=torch.float32).view(1, 2, 2, 3)
    mixed, _ = mixing(f, g)
    assert torch.allclose(mixed[0, 0], f[0, 0] * expected[0]) and torch.allclose(mixed[0, 1], f[0, 1] * expected[0])


def test_reshape_mask_is_column_major():
    flat = torch.arange(6.0).view(1, 6)
    assert reshape_mask(flat, 2, 3).tolist() == [[[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mask_stays_finite_under_autocast_with_extreme_inputs(dtype):
    torch.manual_seed(0)
    model = FeatureMaskNetwork(5, arch="resnet18", input_size=(64, 32)).eval()
    extreme = torch.full((2, 512), 1e6)
    with torch.autocast("cpu", dtype=dtype):
        mask = model.mixing.mask(extreme)
    assert mask.dtype == torch.float32 and torch.isfinite(mask).all()
    assert mask.max() <= math.exp(model.mixing.log_mask_max) * (1 + 1e-6) and mask.min() >= 1.0
    huge_images = torch.randn(2, 3, 64, 32) * 1e4
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(huge_images)
    assert torch.isfinite(out.mask).all() and torch.isfinite(out.l.float()).all()


def test_descriptor_equation_6():
    g, l = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0, 0.0]])  # noqa: E741
    d = fmn_descriptor(g, l, alpha=0.5)
    assert torch.allclose(d, torch.tensor([[0.3, 0.4, 0.0, 0.5, 0.0]]))
    assert torch.allclose(fmn_descriptor(g, l, alpha=0.25)[0, :2], torch.tensor([0.15, 0.2]))


def test_lan_starts_from_the_grn_initial_weights():
    torch.manual_seed(0)
    model = FeatureMaskNetwork(5, arch="resnet18", input_size=(64, 32))
    for name, stage in model.lan_stages.items():
        for (k, a), (_, b) in zip(stage.state_dict().items(), model.grn_stages[name].state_dict().items(), strict=True):
            assert torch.equal(a, b), k
        assert stage is not model.grn_stages[name]
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(stage.parameters(), model.grn_stages[name].parameters(),
                                                                 strict=True))


def test_missing_imagenet_weights_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    file, url = imagenet_weights_file("resnet50")
    assert str(file).startswith(str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        build_resnet("resnet50", "imagenet")
    message = str(info.value)
    assert file.name in message and str(file) in message and url in message and "pretrained='none'" in message


def test_local_weights_file_is_used(tmp_path):
    torch.manual_seed(3)
    source = build_resnet("resnet18")
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    loaded = build_resnet("resnet18", str(tmp_path / "r18.pth"))
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsUnavailableError, match="cannot read pretrained weights"):
        build_resnet("resnet18", str(tmp_path / "bad.pth"))
    # the ResNet-50 tensors a ResNet-18 file lacks (its bottleneck convolutions) are counted in the message
    missing = len(set(build_resnet("resnet50").state_dict()) - set(source.state_dict()))
    with pytest.raises(WeightsUnavailableError, match=f"do not fit resnet50: {missing} missing"):
        build_resnet("resnet50", str(tmp_path / "r18.pth"))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_resnet("resnet18", str(tmp_path / "nope.pth"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        FeatureMaskNetwork(5, arch="vgg16")
    with pytest.raises(ValueError, match="masked_layer must be one of"):
        FeatureMaskNetwork(5, arch="resnet18", masked_layer="res5")
    with pytest.raises(ValueError, match="num_classes"):
        FeatureMaskNetwork(1, arch="resnet18")
    model = FeatureMaskNetwork(5, arch="resnet18", input_size=(64, 32))
    with pytest.raises(ValueError, match="built for another input size"):
        model(torch.randn(1, 3, 128, 64))


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
@pytest.mark.parametrize(("input_size", "mask_size"), [((160, 64), (40, 16)), ((256, 128), (64, 32))])
def test_lite_backbones_train_at_the_common_re_id_input_sizes(arch, input_size, mask_size):
    """160x64 and 256x128 with the mask at the stride-4 output: a 40x16 and a 64x32 mask, and a training step."""
    torch.manual_seed(0)
    model = FeatureMaskNetwork(4, arch=arch, masked_layer="res2", input_size=input_size)
    assert model.mixing.mask_size == mask_size
    out = model(torch.randn(2, 3, *input_size))
    assert out.mask.shape == (2, *mask_size) and out.g.shape == out.l.shape == (2, 1280)
    (out.grn_logits.sum() + out.lan_logits.sum()).backward()
    assert model.mixing.transform.weight.grad is not None


def test_bn_neck_normalises_the_classifier_input_and_returns_the_feature_before_it():
    torch.manual_seed(0)
    plain = FeatureMaskNetwork(5, arch="resnet18", input_size=(64, 32))
    torch.manual_seed(0)
    necked = FeatureMaskNetwork(5, arch="resnet18", input_size=(64, 32), bn_neck=True)
    for neck, classifier in ((necked.grn_neck, necked.grn_classifier), (necked.lan_neck, necked.lan_classifier)):
        assert isinstance(neck, torch.nn.BatchNorm1d) and classifier.bias is None
        assert not neck.bias.requires_grad and torch.equal(neck.bias, torch.zeros(512)) and neck.weight.requires_grad
    assert isinstance(plain.grn_neck, torch.nn.Identity) and plain.grn_classifier.bias is not None
    # keys change only with the neck on: a checkpoint of a network without it loads as before
    added = set(necked.state_dict()) - set(plain.state_dict())
    assert {k.split(".")[0] for k in added} == {"grn_neck", "lan_neck"}
    assert set(plain.state_dict()) - set(necked.state_dict()) == {"grn_classifier.bias", "lan_classifier.bias"}
    images = torch.randn(4, 3, 64, 32)
    out = necked(images)
    g = torch.flatten(necked.pool(necked._grn(images)[1]), 1)
    assert torch.allclose(out.g, g)  # g (and l) are the pooled features, before the BatchNorm
    for feature, logits, classifier in ((g, out.grn_logits, necked.grn_classifier),
                                        (out.l, out.lan_logits, necked.lan_classifier)):
        normalised = (feature - feature.mean(0)) / torch.sqrt(feature.var(0, unbiased=False) + 1e-5)
        assert torch.allclose(logits, classifier(normalised), atol=1e-5)  # the classifier sees the batch-normed copy


def test_freezing_the_grn_freezes_its_neck_too():
    model = FeatureMaskNetwork(5, arch="resnet18", input_size=(64, 32), bn_neck=True)
    model.freeze_grn()
    model.train()
    assert not model.grn_neck.training and not any(p.requires_grad for p in model.grn_neck.parameters())
    assert model.lan_neck.training and model.lan_neck.weight.requires_grad
    before = model.grn_neck.running_mean.clone()
    model(torch.randn(4, 3, 64, 32))
    assert torch.equal(model.grn_neck.running_mean, before)  # statistics stay as stage 1 left them
    assert not torch.equal(model.lan_neck.running_mean, torch.zeros(512))


def test_the_signed_mask_can_suppress_and_the_papers_form_cannot():
    """mask_form='signed' drops eq. (1)'s ReLU: the mask reaches below 1; the paper's form stays in [1, e^B]."""
    from fmn_core.engine.config import TrainConfig
    from fmn_core.utils.errors import FMNInputError

    torch.manual_seed(0)
    g = torch.randn(64, 32) * 5
    for form, lowest in (("amplify", 1.0), ("signed", float(torch.exp(torch.tensor(-1.0))))):
        mixing = MixingNetwork(32, (8, 4), log_mask_max=1.0, form=form).eval()
        torch.nn.init.normal_(mixing.transform.weight, std=1.0)  # a trained-looking FC: both signs of W^T g
        mask = mixing.mask(g)
        assert mask.min() >= lowest - 1e-6 and mask.max() <= float(torch.e) + 1e-6
        assert (mask < 1).any() == (form == "signed")
    with pytest.raises(FMNInputError, match="mask_form='inverted': expected one of"):
        TrainConfig(mask_form="inverted").validate()
