"""Losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unetkit.errors import UnetkitError
from unetkit.train.head_losses import DistanceHeadLoss, OffsetsHeadLoss, RaysHeadLoss
from unetkit.train.losses import LOSSES_BY_TASK, build_loss, inverse_frequency_weights

LN3 = math.log(3.0)
IGNORE = 255


def _two_class_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (1, 2, 1, 3) and target (1, 1, 3).

    pixel 0: logits [0, 0]   -> p = [1/2, 1/2], target 0, CE = ln 2
    pixel 1: logits [0, ln3] -> p = [1/4, 3/4], target 1, CE = ln(4/3)
    pixel 2: logits [5, -5], target ignored
    """
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[0.0, LN3, -5.0]]]])
    target = torch.tensor([[[0, 1, IGNORE]]])
    return logits, target


def _binary_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (1, 1, 1, 3): p = [1/2, 3/4, ~1]; target [0, 1, ignored]."""
    return torch.tensor([[[[0.0, LN3, 9.0]]]]), torch.tensor([[[0, 1, IGNORE]]])


CE0, CE1 = math.log(2.0), math.log(4.0 / 3.0)
# Soft Dice of _two_class_batch with smooth 1 (ignored pixel removed):
#   class 0: |P|=1/2+1/4, |Y|=1, P.Y=1/2 -> (2*0.5+1)/(1.75+1) = 2/2.75
#   class 1: |P|=1/2+3/4, |Y|=1, P.Y=3/4 -> (2*0.75+1)/(2.25+1) = 2.5/3.25
DICE_MULTI = 1 - (2 / 2.75 + 2.5 / 3.25) / 2
DICE_BINARY = 1 - 2.5 / 3.25  # foreground only: same numbers as class 1 above

# (name, task, class_weights, weight map over the 3 pixels, expected)
CASES = [
    ("ce", "multiclass", None, None, (CE0 + CE1) / 2),
    ("ce", "multiclass", [1.0, 3.0], None, (CE0 + 3 * CE1) / 4),
    ("ce", "multiclass", None, [1.0, 2.0, 100.0], (CE0 + 2 * CE1) / 3),
    ("ce", "multiclass", [1.0, 3.0], [2.0, 2.0, 100.0], (2 * CE0 + 6 * CE1) / 8),
    ("dice", "multiclass", None, None, DICE_MULTI),
    ("ce+dice", "multiclass", None, None, (CE0 + CE1) / 2 + DICE_MULTI),
    ("bce", "binary", None, None, (CE0 + CE1) / 2),
    ("bce", "binary", [1.0, 3.0], None, (CE0 + 3 * CE1) / 4),
    ("bce", "binary", [3.0], None, (CE0 + 3 * CE1) / 4),  # foreground weight only
    ("bce", "binary", None, [1.0, 2.0, 100.0], (CE0 + 2 * CE1) / 3),
    ("dice", "binary", None, None, DICE_BINARY),
    ("bce+dice", "binary", None, None, (CE0 + CE1) / 2 + DICE_BINARY),
]


@pytest.mark.parametrize("name, task, class_weights, weight, expected", CASES)
def test_loss_matches_hand_value(name, task, class_weights, weight, expected):
    logits, target = _two_class_batch() if task == "multiclass" else _binary_batch()
    cw = None if class_weights is None else torch.tensor(class_weights)
    loss = build_loss(name, task, num_classes=2, ignore_index=IGNORE, class_weights=cw)
    w = None if weight is None else torch.tensor([[weight]])
    value = loss(logits, target, w)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["ce", "dice", "ce+dice"])
def test_ignored_pixels_change_nothing(name):
    logits, target = _two_class_batch()
    loss = build_loss(name, "multiclass", 2)
    other = logits.clone()
    other[..., 2] = torch.tensor([-30.0, 40.0]).view(1, 2, 1)
    assert loss(other, target).item() == pytest.approx(loss(logits, target).item(), abs=1e-7)
    logits.requires_grad_(True)
    loss(logits, target).backward()
    assert torch.all(logits.grad[..., 2] == 0)


def test_cross_entropy_agrees_with_torch_weighted_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = IGNORE
    cw = torch.tensor([0.5, 1.0, 2.0, 4.0])
    ours = build_loss("ce", "multiclass", 4, class_weights=cw)(logits, target)
    ref = F.cross_entropy(logits, target, weight=cw, ignore_index=IGNORE)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "dice", "ce+dice"])
def test_all_ignored_gives_zero_and_a_gradient(name):
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), IGNORE)
    value = build_loss(name, "multiclass", 3)(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert name != "ce" or value.item() == 0.0
    assert torch.all(torch.isfinite(logits.grad))


# channel 0: diffs [1, 0, nan target]; channel 1: diffs [2, nan target, 2]; weights [1, 1, 2]:
# weight sum over valid values = 1 + 1 + 1 + 2 = 5; squared: 1 + 0 + 4 + 2*4; abs: 1 + 0 + 2 + 2*2
@pytest.mark.parametrize("name, expected", [("mse", 13 / 5), ("l1", 7 / 5)])
def test_regression_losses_ignore_nan_and_use_weights(name, expected):
    outputs = torch.tensor([[[[1.0, 2.0, 3.0]], [[2.0, 0.0, 2.0]]]])
    target = torch.tensor([[[[0.0, 2.0, math.nan]], [[0.0, math.nan, 0.0]]]])
    weight = torch.tensor([[[1.0, 1.0, 2.0]]])
    loss = build_loss(name, "regression", 2)
    assert loss(outputs, target, weight).item() == pytest.approx(expected)


def test_regression_accepts_bhw_target_for_one_channel():
    loss = build_loss("mse", "regression", 1)
    assert loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2)).item() == 1.0
    with pytest.raises(UnetkitError, match="1-channel"):
        loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2))


def test_bf16_autocast_is_computed_in_float32():
    torch.manual_seed(0)
    logits = (torch.randn(2, 3, 8, 8) * 60).bfloat16()  # large logits: fp16/bf16 softmax risk
    target = torch.randint(0, 3, (2, 8, 8))
    loss = build_loss("ce+dice", "multiclass", 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(loss(logits.float(), target).item(), rel=1e-6)


@pytest.mark.parametrize(
    "name, task", [("bce", "multiclass"), ("ce", "binary"), ("dice", "regression"), ("x", "binary")]
)
def test_incompatible_name_lists_valid_choices(name, task):
    with pytest.raises(UnetkitError, match=", ".join(LOSSES_BY_TASK[task]).replace("+", r"\+")):
        build_loss(name, task, 2)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(UnetkitError, match="unknown task"):
        build_loss("ce", "instance", 2)
    with pytest.raises(UnetkitError, match="class_weights has 3 values"):
        build_loss("ce", "multiclass", 2, class_weights=torch.ones(3))
    loss = build_loss("ce+dice", "multiclass", 2)
    with pytest.raises(UnetkitError, match="crop the target"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 6, 6, dtype=torch.long))
    with pytest.raises(UnetkitError, match="weight map shape"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(4, 4))
    with pytest.raises(UnetkitError, match=r"must be \(B, 2, H, W\)"):
        build_loss("dice", "multiclass", 2)(
            torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
        )


def test_inverse_frequency_weights():
    # 1/share = [4/3, 4, -], mean 8/3 -> [1/2, 3/2, 0]
    weights = inverse_frequency_weights([0.75, 0.25, 0.0])
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([0.5, 1.5, 0.0])
    with pytest.raises(UnetkitError):
        inverse_frequency_weights([0.0, 0.0])


def test_distance_head_loss_is_class_loss_plus_a_zero_floored_distance_term():
    torch.manual_seed(0)
    classes = build_loss("ce+dice", "multiclass", 2)
    loss = DistanceHeadLoss(classes, IGNORE, factor=1.0)
    target_cls = torch.tensor([[[0, 1, 1, IGNORE]]])  # (1, 1, 4)
    d = torch.tensor([[[0.0, 0.3, 1.0, 0.5]]])
    target = torch.stack([target_cls.float(), d], 1)  # (1, 2, 1, 4)
    logits = torch.randn(1, 3, 1, 4)
    # a perfect distance prediction adds nothing to the class loss
    perfect = logits.clone()
    perfect[:, 2] = torch.logit(d.clamp(1e-6, 1 - 1e-6))
    assert float(loss(perfect, target)) == pytest.approx(float(classes(logits[:, :2], target_cls)))
    # the gradient of the distance logit is (sigmoid - d) / counted pixels, 0 where ignored
    x = logits.clone().requires_grad_(True)
    weight = torch.tensor([[[1.0, 2.0, 1.0, 5.0]]])
    loss(x, target, weight).backward()
    p = torch.sigmoid(logits[:, 2])
    expected = torch.tensor([1.0, 2.0, 1.0, 0.0]) * (p - d)[0, 0] / 4.0
    assert torch.allclose(x.grad[0, 2, 0], expected, atol=1e-6)
    with pytest.raises(UnetkitError, match="distance head"):
        loss(logits, target_cls)


def test_rays_head_loss_adds_the_probability_weighted_ray_error_in_pixels():
    torch.manual_seed(0)
    classes = build_loss("ce+dice", "multiclass", 2)
    rays = 4
    loss = RaysHeadLoss(classes, IGNORE, distance_factor=1.0, rays_factor=0.5, scale=10.0)
    target_cls = torch.tensor([[[0, 1, 1, IGNORE]]])  # (1, 1, 4)
    d = torch.tensor([[[0.0, 0.25, 1.0, 0.5]]])
    true_rays = torch.tensor([[3.0, 6.0, 2.0, 9.0]]).T[None, :, None, :].expand(1, 4, 1, 4)
    target = torch.cat([target_cls.float()[:, None], d[:, None], true_rays], 1)  # (1, 6, 1, 4)
    logits = torch.randn(1, 3 + rays, 1, 4)
    base = DistanceHeadLoss(classes, IGNORE, factor=1.0)(logits[:, :3], target[:, :2])
    perfect = logits.clone()
    perfect[:, 3:] = true_rays / 10.0  # outputs in units of the scale
    assert float(loss(perfect, target)) == pytest.approx(float(base), rel=1e-6)
    # every ray 2 px too long: + 0.5 x 2, whatever the weights (background and ignored
    # pixels, weights 0 and ignored, are 4 px off and do not count)
    off = perfect.clone()
    off[:, 3:] += 0.2
    off[0, 3:, 0, 0] += 0.2
    off[0, 3:, 0, 3] += 0.2
    assert float(loss(off, target)) == pytest.approx(float(base) + 1.0, rel=1e-6)
    # weighted by d: 1 px too long on pixel 1 (d 0.25), 3 px on pixel 2 (d 1): (0.25 + 3) / 1.25
    off = perfect.clone()
    off[0, 3:, 0, 1] += 0.1
    off[0, 3:, 0, 2] += 0.3
    assert float(loss(off, target)) == pytest.approx(float(base) + 0.5 * 3.25 / 1.25, rel=1e-6)
    with pytest.raises(UnetkitError, match="rays head"):
        loss(logits, target[:, :2])


def test_offsets_head_loss_adds_the_offset_error_and_its_gradients_error_on_objects():
    torch.manual_seed(0)
    classes = build_loss("ce+dice", "multiclass", 3)  # background, object, boundary
    loss = OffsetsHeadLoss(classes, IGNORE, factor=0.5)
    target_cls = torch.tensor([[[0, 1, 1, 1, 2, IGNORE]]])  # (1, 1, 6)
    ox = torch.tensor([[[0.0, -0.5, 0.0, 0.5, 1.0, 0.3]]])
    oy = torch.zeros(1, 1, 6)
    target = torch.stack([target_cls.float(), ox, oy], 1)  # (1, 3, 1, 6)
    logits = torch.randn(1, 5, 1, 6)
    base = float(classes(logits[:, :3], target_cls))
    perfect = logits.clone()
    perfect[:, 3], perfect[:, 4] = ox, oy
    assert float(loss(perfect, target)) == pytest.approx(base, rel=1e-6)
    # every offset 0.1 too large in x: squared error 0.01 on the 5 labelled pixels, and no
    # change of any gradient
    off = perfect.clone()
    off[:, 3] += 0.1
    assert float(loss(off, target)) == pytest.approx(base + 0.5 * 0.01, rel=1e-5)
    # one object pixel (index 2) 0.4 too large: squared 0.16 / 5 pixels, and the x gradients
    # at pixels 1 and 3 (object pixels, central differences) off by 0.2 each: 2 x (0.04 + 0.04)
    # / 4 object pixels (1, 2, 3, 4)
    off = perfect.clone()
    off[0, 3, 0, 2] += 0.4
    expected = 0.16 / 5 + 2 * 0.08 / 4
    assert float(loss(off, target)) == pytest.approx(base + 0.5 * expected, rel=1e-5)
    assert float(OffsetsHeadLoss(classes, IGNORE, factor=0)(off, target)) == pytest.approx(base)
    with pytest.raises(UnetkitError, match="offsets head"):
        loss(logits, target[:, :2])
