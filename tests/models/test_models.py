"""The parameterised U-Net: presets, parameter counts, the size contract, gradients."""

from __future__ import annotations

import pytest
import torch

from unetkit import ModelConfig, UNet, build_model, preset_config
from unetkit.models import PRESETS

# Parameter counts of the full-size presets with their default channels, derived from the seeds'
# code (replicas counted layer by layer); the first three are fixed by the issue.
PARAM_COUNTS = {
    ("paper", 1, 2): 31_030_658,
    ("milesial", 3, 2): 31_037_698,  # milesial/Pytorch-UNet UNet(3, 2, bilinear=False)
    ("milesial-bilinear", 3, 2): 17_263_042,  # UNet(3, 2, bilinear=True)
    ("reflect", 3, 2): 37_657_602,  # seed 004
    ("strided", 3, 3): 32_090_627,  # seed 000, PyTorch
    ("keras32", 1, 1): 7_759_521,  # seed 000, Keras
    ("restore", 3, 3): 7_759_683,  # seed 000, TF UNet_1X (deconvolutions without bias)
    ("x3", 3, 3): 7_760_475,  # seed 000, TF UNet_3X
    ("avgpool", 3, 3): 5_146_601,
    ("dilated", 3, 2): 31_031_810,  # seed 001
    ("small", 3, 2): 1_942_594,  # milesial at base width 16 (the default training recipe)
}


def tiny(name: str, **kw) -> UNet:
    """A preset at 1/16 of its width: same topology, fast on a CPU."""
    base = preset_config(name).base_width
    return build_model(name, base_width=max(2, base // 16), **kw)


@pytest.mark.parametrize(("name", "cin", "cout"), list(PARAM_COUNTS))
def test_parameter_counts(name, cin, cout):
    with torch.device("meta"):
        model = build_model(name, in_channels=cin, num_classes=cout)
    assert model.num_parameters() == PARAM_COUNTS[(name, cin, cout)]


def test_every_preset_has_a_count():
    assert {k[0] for k in PARAM_COUNTS} == set(PRESETS)


def test_paper_572_gives_388():
    with torch.device("meta"):
        model = build_model("paper")
    assert model.output_size((572, 572)) == (388, 388)
    assert model.output_size((572, 636)) == (388, 452)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="valid presets: paper, milesial"):
        build_model("resnet")


def test_model_config_is_strict():
    with pytest.raises(ValueError, match="unknown ModelConfig key"):
        ModelConfig.from_dict({"depth": 3, "colour": "red"})
    with pytest.raises(ValueError, match="padding must be one of"):
        ModelConfig(padding="same")
    cfg = preset_config("reflect", num_classes=5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# (preset, input size, expected output size or None when illegal)
SHAPES = [
    ("paper", (188, 188), (4, 4)),
    ("paper", (252, 268), (68, 84)),
    ("paper", (256, 256), None),
    ("paper", (189, 188), None),
    ("milesial", (64, 64), (64, 64)),
    ("milesial", (65, 47), (65, 47)),  # pad merge: odd sizes work (seed 002)
    ("milesial", (17, 33), (17, 33)),
    ("milesial", (15, 32), None),  # too small for 4 poolings
    ("milesial-bilinear", (61, 50), (61, 50)),
    ("reflect", (64, 48), (64, 48)),
    ("reflect", (65, 64), None),
    ("strided", (32, 48), (32, 48)),
    ("strided", (33, 48), None),
    ("keras32", (48, 32), (48, 32)),
    ("keras32", (50, 32), None),
    ("restore", (32, 32), (32, 32)),
    ("x3", (32, 48), (96, 144)),
    ("avgpool", (32, 64), (32, 64)),
    ("avgpool", (31, 64), None),
    ("dilated", (256, 256), (256, 256)),
    ("dilated", (251, 239), (251, 239)),
    ("dilated", (128, 128), None),
]


@pytest.mark.parametrize(("name", "size", "expected"), SHAPES)
def test_shape_table(name, size, expected):
    model = tiny(name).eval()
    x = torch.randn(2, model.config.in_channels, *size)
    if expected is None:
        with pytest.raises(ValueError, match=r"not legal.*nearest legal: \d+"):
            model.output_size(size)
        with pytest.raises(ValueError, match="not legal"):
            model(x)
        return
    assert model.output_size(size) == expected
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (2, model.config.out_channels, *expected)


@pytest.mark.parametrize("name", list(PRESETS))
def test_legal_sizes_are_legal_and_nearest(name):
    model = tiny(name)
    below, above = model.legal_sizes(300)
    for n in (below, above):
        assert n is not None
        model.output_size((n, n))
    for n in range(below + 1, above):
        with pytest.raises(ValueError):
            model.output_size((n, n))


def test_illegal_size_message_names_size_and_neighbours():
    model = tiny("paper")
    with pytest.raises(ValueError) as err:
        model.output_size((256, 252))
    assert "input height 256" in str(err.value)
    assert "252 or 268" in str(err.value)


@pytest.mark.parametrize("name", list(PRESETS))
def test_forward_backward_every_preset(name):
    torch.manual_seed(0)
    model = tiny(name).train()
    size = model.legal_sizes(64)[1]
    x = torch.randn(2, model.config.in_channels, size, size)
    y = model(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_activate_matches_head():
    logits = torch.randn(1, 3, 4, 4)
    softmax = tiny("milesial", num_classes=3).activate(logits)
    assert torch.allclose(softmax.sum(1), torch.ones(1, 4, 4))
    sig = tiny("keras32").activate(logits[:, :1])
    assert torch.allclose(sig, torch.sigmoid(logits[:, :1]))


@pytest.mark.parametrize("name", ["reflect", "milesial", "paper"])
def test_gradient_checkpointing_is_equivalent(name):
    torch.manual_seed(0)
    plain = tiny(name).train()
    ckpt = UNet(plain.config.replace(checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    size = plain.legal_sizes(64)[1]
    x = torch.randn(2, plain.config.in_channels, size, size)
    outs, grads, stats = [], [], []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # same dropout masks
        y = model(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
        stats.append([b.clone() for b in model.buffers()])
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    # running statistics are updated once per step, not again during recomputation
    for a, b in zip(stats[0], stats[1]):
        assert torch.equal(a, b)


def test_checkpointing_really_recomputes():
    """The forward of each block runs a second time during backward (seed 002 never did)."""
    model = UNet(tiny("milesial").config.replace(checkpointing=True)).train()
    calls: dict[str, int] = {}
    blocks = [(f"encoder {i}", b) for i, b in enumerate(model.encoders)]
    blocks += [(f"decoder {i}", b) for i, b in enumerate(model.decoders)]
    for name, block in blocks:  # every encoder and decoder block, not just the first
        block[0].register_forward_pre_hook(
            lambda *a, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert calls == {name: 2 for name, _ in blocks}
