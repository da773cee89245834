"""Tiled prediction: plans, mirrored windows, and tiled == whole-image prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit import UnetkitError, build_model
from unetkit.infer.tiling import (
    SizeRule,
    blend_weights,
    iter_bands,
    plan_axis,
    plan_image,
    predict_tiled,
    read_window,
    reflect_indices,
)

P = 64  # tile size of the equality tables
SIZES = [(1, 1), (P - 1, P - 1), (P, P), (P + 1, P + 1), (3 * P + 5, 2 * P + 3)]
OVERLAPS = [0.0, 0.25, 0.5]


@pytest.fixture(scope="module")
def same_models(tiny_model):
    """Tiny same-padding U-Nets in eval mode: pad merge (any size) and crop merge (x4 sizes)."""
    pad = tiny_model("milesial", in_channels=1, out_channels=3)
    crop = tiny_model("keras32", out_channels=3, head="logits", seed=None)  # RNG drawn on
    return {"pad": pad, "crop": crop}


@pytest.fixture(scope="module")
def valid_model(tiny_model):
    return tiny_model("paper", seed=1)


def _image(h: int, w: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    return torch.rand(channels, h, w, generator=torch.Generator().manual_seed(seed))


# -- windows ----------------------------------------------------------------------------------
def test_reflect_indices_by_hand():
    assert reflect_indices(-3, 6, 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert reflect_indices(-2, 3, 1).tolist() == [0, 0, 0, 0, 0]
    # a pad far larger than the axis keeps bouncing, as np.pad(mode="reflect") does
    expected = np.pad(np.arange(3), (7, 9), mode="reflect")
    assert reflect_indices(-7, 12, 3).tolist() == expected.tolist()


def test_read_window_matches_np_pad_for_arrays_and_tensors():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 6), (3, 9), (0, 0)), mode="reflect")
    window = read_window(image, (-4, 11), (-3, 16))
    np.testing.assert_array_equal(window, padded)
    inside = read_window(image, (1, 4), (2, 6))
    assert np.shares_memory(inside, image)  # a view: memory maps read only the window
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    got = read_window(tensor, (-4, 11), (-3, 16))
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), padded)


def test_blend_weights():
    w = blend_weights((9, 6), "gaussian")
    assert w.shape == (9, 6) and float(w.max()) <= 1.0 and float(w.min()) > 0
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    assert float(w[4, 2]) > float(w[0, 2]) > float(w[0, 0])
    assert torch.equal(blend_weights((3, 4), "constant"), torch.ones(3, 4))
    with pytest.raises(UnetkitError, match="blend must be one of"):
        blend_weights((3, 3), "median")


# -- plans ------------------------------------------------------------------------------------
def _kept(plan) -> list[tuple[int, int]]:
    return [
        (w + plan.offset + a, w + plan.offset + b) for w, (a, b) in zip(plan.windows, plan.keeps)
    ]


@pytest.mark.parametrize("length", [1, 3, 15, 16, 17, 63, 64, 65, 100, 197, 1000])
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_same_padding_plans_cover_the_axis_on_the_pooling_grid(same_models, length, overlap):
    rule = SizeRule.from_model(same_models["crop"])
    plan = plan_axis(length, 32, overlap, rule)
    kept = _kept(plan)
    assert kept[0][0] == 0 and kept[-1][1] == length
    assert all(a < b for a, b in kept)
    assert all(b1 >= a2 for (_, b1), (a2, _) in zip(kept, kept[1:]))  # no gaps
    assert all(w % rule.align == 0 for w in plan.windows)
    rule.output_size((plan.tile_in, plan.tile_in))  # legal


def test_paper_preset_overlap_tile_plan_by_hand():
    """572 -> 388; strides of 384 (multiple of 16 on the pooling grid) and 92 px of context."""
    rule = SizeRule.from_model(build_model("paper"))
    plan = plan_axis(4096, 572, 0.25, rule)
    assert (plan.tile_in, plan.tile_out, plan.offset) == (572, 388, 92)
    assert plan.windows == tuple(384 * k - 92 for k in range(11))
    assert plan.keeps == ((0, 384),) * 10 + ((0, 4096 - 3840),)
    whole = plan_axis(100, None, 0.0, rule)  # the `full` strategy: one mirrored window
    assert (whole.tile_in, whole.tile_out, whole.windows, whole.keeps) == (
        284,
        100,
        (-92,),
        ((0, 100),),
    )


def test_bad_overlap_is_an_error():
    with pytest.raises(UnetkitError, match=r"overlap must be in \[0, 1\), got 1.0"):
        plan_axis(100, 32, 1.0, SizeRule.any_size())


# -- equality with the whole-image run ---------------------------------------------------------
@pytest.mark.parametrize("align", [1, 4])
def test_identity_network_is_reassembled_exactly(align):
    """A per-pixel network: any misplaced, missing or doubled tile row/column shows."""
    rule = SizeRule(lambda s: (int(s[0]), int(s[1])), lambda n: (n, n), align)
    for h, w in [(1, 1), (7, 5), (33, 50), (70, 41)]:
        image = _image(h, w, seed=h, channels=2)
        for overlap in OVERLAPS:
            out = predict_tiled(lambda x: x, image, (16, 12), overlap, rule, context=3)
            torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["pad", "crop"])
@pytest.mark.parametrize("size", SIZES)
def test_tiled_equals_whole_image(same_models, kind, size):
    """With enough context every kept pixel is the full run's (to float rounding)."""
    model = same_models[kind]
    rule = SizeRule.from_model(model)
    image = _image(*size, seed=sum(size))
    with torch.inference_mode():
        full = predict_tiled(model, image, None, 0.0, rule)
        for overlap in OVERLAPS:
            tiled = predict_tiled(model, image, (P, P), overlap, rule, context=12, batch_size=8)
            assert tiled.shape == (3, *size)
            torch.testing.assert_close(tiled, full, rtol=0, atol=1e-5)
            agreement = (tiled.argmax(0) == full.argmax(0)).float().mean()
            assert agreement >= 0.999


@pytest.mark.parametrize("overlap", [0.0, 0.25])
def test_default_context_is_close_and_no_context_is_not(same_models, overlap):
    """The defaults (context 2 * align, overlap 0, kept tile parts abutting; or blended with
    an overlap) agree with one whole-image pass on >= 99.9 % of the mask (bench/predict.py
    measures the full-width model: 99.998 % at 2048^2); and the check is sensitive: tile
    borders without context really differ."""
    model = same_models["pad"]
    rule = SizeRule.from_model(model)
    image = _image(5 * P + 3, 4 * P + 7, seed=5)
    with torch.inference_mode():
        full = predict_tiled(model, image, None, 0.0, rule)
        near = predict_tiled(model, image, (P, P), overlap, rule)
        bare = predict_tiled(model, image, (P, P), 0.0, rule, context=0, blend="constant")
    assert len(plan_axis(5 * P + 3, P, overlap, rule).windows) > 4  # many inner borders
    assert (near.argmax(0) == full.argmax(0)).float().mean() >= 0.999
    assert float((near - full).abs().max()) < 1e-2
    assert float((bare - full).abs().max()) > 1e-2


@pytest.mark.parametrize("tile", [(44, 44), (48, 52), (60, 44)])
def test_overlap_tile_reproduces_a_valid_whole_image_run(valid_model, tile):
    """Paper-style valid U-Net: tiles of any legal size give the whole run's output exactly."""
    image = _image(120, 92, seed=7)
    rule = SizeRule.from_model(valid_model)
    with torch.inference_mode():
        whole = valid_model(image[None])[0]  # (2, 80, 52): the centre, 20 px of context lost
        tiled = predict_tiled(valid_model, image, tile, 0.5, rule)
    assert tiled.shape == (2, 120, 92)
    torch.testing.assert_close(tiled[:, 20:100, 20:72], whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4, 4), (33, 17), (57, 101)])
def test_valid_model_full_and_tiled_agree_at_any_size(valid_model, size):
    image = _image(*size, seed=size[0])
    rule = SizeRule.from_model(valid_model)
    with torch.inference_mode():
        full = predict_tiled(valid_model, image, None, 0.0, rule)
        tiled = predict_tiled(valid_model, image, (60, 64), 0.0, rule, batch_size=8)
    assert full.shape == (2, *size)
    torch.testing.assert_close(tiled, full, rtol=0, atol=1e-6)


# -- streaming ----------------------------------------------------------------------------------
def test_bands_stream_in_order_and_reduce_keeps_only_masks(same_models):
    model = same_models["pad"]
    rule = SizeRule.from_model(model)
    image = np.random.default_rng(0).random((150, 70, 1)).astype(np.float32)
    plans = plan_image((150, 70), (32, 32), 0.25, rule)
    with torch.inference_mode():
        bands = [(y0, y1, b.shape) for y0, y1, b in iter_bands(model, image, plans)]
        full = predict_tiled(model, image, (32, 32), 0.25, rule)
        masks = predict_tiled(
            model, image, (32, 32), 0.25, rule, reduce=lambda b: b.argmax(0).to(torch.uint8)
        )
    assert bands[0][0] == 0 and bands[-1][1] == 150
    assert all(y1 == n0 for (_, y1, _), (n0, _, _) in zip(bands, bands[1:]))
    assert all(shape[1] <= 32 and shape[2] == 70 for _, _, shape in bands)
    assert masks.dtype == torch.uint8 and masks.shape == (150, 70)
    assert torch.equal(masks, full.argmax(0).to(torch.uint8))


def test_batch_size_does_not_change_the_result(same_models):
    model = same_models["crop"]
    rule = SizeRule.from_model(model)
    image = _image(70, 90, seed=5)
    with torch.inference_mode():
        one = predict_tiled(model, image, (32, 32), 0.5, rule, batch_size=1)
        many = predict_tiled(model, image, (32, 32), 0.5, rule, batch_size=7)
    torch.testing.assert_close(one, many, rtol=0, atol=1e-6)


# -- the default plan: balanced tiles, context from the pooling grid, chosen by the device ------
def test_default_plan_balances_the_tiles_by_hand():
    """2048 px with 640 px tiles at depth 4 (context 32): four windows whatever the tile, so
    the tile shrinks to 560 (the smallest on the grid that still needs only four) instead of
    the last 640 px window re-running 448 px of its neighbour."""
    rule = SizeRule(lambda size: size, lambda n: (n, n), 16)
    plan = plan_axis(2048, 640, 0.0, rule)
    assert plan.tile_in == 560 and plan.windows == (0, 496, 992, 1488)
    assert plan.keeps == ((0, 528), (32, 528), (32, 528), (32, 560))
    kept = sum(b - a for a, b in plan.keeps)
    assert kept == 2048  # abutting, no pixel computed twice
    assert len(plan_axis(2048, 576, 0.0, rule).windows) == 4  # what 560 needs, no fewer
    assert len(plan_axis(2048, 544, 0.0, rule).windows) == 5


def test_auto_tiling_follows_the_device_and_the_memory(monkeypatch):
    from unetkit.infer import budget, tiling

    cpu = torch.device("cpu")
    monkeypatch.setattr(budget, "available_memory", lambda: 64.0 * 2**30)
    assert tiling.auto_tiling(16, cpu) == (640, 1)  # the CPU's knee, one tile at a time
    assert tiling.auto_tiling(64, cpu) == (640, 1)  # 64 x 24 B x 640^2 = 0.6 GiB < 1 GiB
    assert tiling.auto_tiling(256, cpu) == (416, 1)  # 1 GiB / (256 x 24 B) = 418^2
    monkeypatch.setattr(budget, "available_memory", lambda: 1.0 * 2**30)  # a quarter: 256 MiB
    side, batch = tiling.auto_tiling(64, cpu)
    assert side == 416 and batch == 1 and 64 * 24 * side**2 <= 2**28
    monkeypatch.setattr(budget, "available_memory", lambda: 1.0)
    assert tiling.auto_tiling(64, cpu) == (64, 1)  # never below 64 px
