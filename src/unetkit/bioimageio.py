"""Export a checkpoint as a BioImage.IO model package (spec format 0.5, a zip with ``rdf.yaml``).

The package is what QuPath, ilastik, deepImageJ and napari run without unetkit:

* ``rdf.yaml`` built with ``bioimageio.spec``'s own description classes (valid by
  construction), with TorchScript weights and ONNX weights (``parent: torchscript``), both
  traced from the checkpoint's network;
* input ``image`` (``batch, channel, y, x``) of the declared integer type, its preprocessing
  exactly the model card's: ``scale_linear`` by ``1 / dtype max`` (unetkit's scaling to
  [0, 1]), then ``zero_mean_unit_variance`` per image and channel (``normalize: image``),
  ``scale_range`` 1 / 99.8 % per image and channel (``percentile``) or
  ``fixed_zero_mean_unit_variance`` with the stored mean / std (``dataset``, ``fixed``);
* space axes sized ``min + n * step`` from the network's size rule
  (``unetkit.export.contract.size_contract``); same-padding networks declare an output
  ``halo`` of the context unetkit's tiling discards at inner tile borders (``min`` is raised to
  the first legal size above twice the halo, which the spec requires); valid-padding networks
  declare the output's negative size ``offset`` instead;
* output ``probabilities`` after ``softmax`` over the channels (or ``sigmoid`` for one-channel
  and sigmoid heads): the probabilities unetkit's masks are the argmax / threshold of;
* test input / output tensors (``.npy``): a sample image (``--sample``, else a synthetic one)
  cut to a legal size, and the exported TorchScript weights' output on it;
* a cover (the sample beside the model's own prediction), ``README.md`` with the input
  contract and a Validation section, the U-Net paper as citation, and ``config.unetkit``: the
  input contract and, for instance models, the object post-processing parameters.

The zip is validated by ``bioimageio.core.test_model`` (both weight formats) before it is
renamed into place; a failed build or test leaves nothing behind. Regression (image-to-image)
models, pixel-shuffle heads and inputs that are neither 1 nor 3 channels are refused in one
line.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetkitError
from .files import atomic_path

log = logging.getLogger(__name__)

UNET_DOI = "10.1007/978-3-319-24574-4_28"
UNET_CITATION = (
    "Ronneberger, O., Fischer, P., Brox, T. (2015). U-Net: Convolutional Networks for "
    "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, 234-241."
)
DTYPES = ("uint8", "uint16")
TEST_SIDE = 256  # the test tensor is at most this big per axis
DEFAULT_AUTHOR = "unetkit user"
DEFAULT_LICENSE = "CC-BY-4.0"


def _legal_test_size(n: int, rule: dict[str, int], least: int) -> int:
    """The largest ``least + k * step`` <= ``min(n, TEST_SIDE)`` (at least ``least``)."""
    top = max(min(n, TEST_SIDE), least)
    return least + (top - least) // rule["step"] * rule["step"]


def _synthetic_sample(channels: int, dtype: str, size: tuple[int, int]) -> np.ndarray:
    """Smooth blobs on a darker ground: a deterministic stand-in when no sample is given."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: size[0], : size[1]]
    image = np.full(size, 0.15)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(6, 20)
        image += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    image = np.clip(image + rng.normal(0, 0.03, size), 0, 1)
    top = np.iinfo(np.dtype(dtype)).max
    return np.repeat(np.rint(image * top).astype(dtype)[:, :, None], channels, axis=2)


def _test_image(sample, channels: int, dtype: str, rule: dict[str, int], least: int):
    """(H, W, C) image of ``dtype`` at a legal size: the sample's centre, or a synthetic one."""
    from .data.imageio import match_channels, read_image

    if sample is None:
        side = least + max(0, (128 - least + rule["step"] - 1) // rule["step"]) * rule["step"]
        return _synthetic_sample(channels, dtype, (side, side))
    image = match_channels(read_image(sample), channels, str(sample))
    if image.dtype != np.dtype(dtype):
        raise UnetkitError(
            f"{sample}: a {image.dtype} image, but the package's input is {dtype} (--input-dtype)"
        )
    h, w = image.shape[:2]
    if min(h, w) < least:
        raise UnetkitError(f"{sample}: {h}x{w} is smaller than the package's least size {least}")
    th, tw = _legal_test_size(h, rule, least), _legal_test_size(w, rule, least)
    top, left = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(image[top : top + th, left : left + tw])


def _preprocessing(card, channels: int, dtype: str) -> list:
    from bioimageio.spec.model import v0_5

    axis = v0_5.AxisId("channel")
    space = [v0_5.AxisId("y"), v0_5.AxisId("x")]
    pre = card.for_export().preprocessing
    top = float(np.iinfo(np.dtype(dtype)).max)
    ops: list = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    # per-image statistics are measured on the tensor as it arrives (bioimageio.core), and
    # both per-image normalisations are the same on pixels and on pixels / dtype max: the
    # scaling to [0, 1] is stated only where it matters, before the fixed mean / std
    if pre.normalize == "image":
        ops.append(
            v0_5.ZeroMeanUnitVarianceDescr(
                kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=space, eps=1e-6)
            )
        )
    elif pre.normalize == "percentile":
        from .data.normalize import PERCENTILES

        ops.append(
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=space,
                    min_percentile=PERCENTILES[0],
                    max_percentile=PERCENTILES[1],
                    eps=1e-6,
                )
            )
        )
    else:
        ops.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1.0 / top)))

        def per_channel(values: tuple[float, ...]) -> list[float]:
            return [float(v) for v in (values * channels if len(values) == 1 else values)]

        ops.append(
            v0_5.FixedZeroMeanUnitVarianceDescr(
                kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                    mean=per_channel(pre.mean), std=per_channel(pre.std), axis=axis
                )
            )
        )
    # the spec casts back to the declared input type after the last step unless told otherwise
    ops.append(v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")))
    return ops


def _readme(card, contract: dict[str, Any], name: str) -> str:
    from .export.contract import contract_text

    objects = ""
    if card.task == "instance":
        objects = (
            "\n## Objects\n\nThe last output channel is the boundary between touching objects. "
            "unetkit turns the probabilities into objects with a seeded watershed; its "
            "parameters are in `config.unetkit.objects`:\n\n```json\n"
            f"{json.dumps(card.objects, indent=2)}\n```\n"
        )
    return (
        f"# {name}\n\n"
        f"A U-Net (Ronneberger et al. 2015) trained with unetkit for {card.task} segmentation "
        f"of {', '.join(card.classes)}.\n\n"
        "## Input and output\n\n"
        + "\n".join(f"- {line}" for line in contract_text(contract).splitlines())
        + "\n\nThe package's output is the probabilities (the activation above applied); "
        "unetkit's class mask is their argmax over channels (one-channel models: probability "
        "> 0.5). The complete input contract is `config.unetkit.input_contract`.\n"
        + objects
        + "\n## Validation\n\n"
        "The test tensors were computed by the packaged TorchScript weights; "
        "`bioimageio test` reproduces them with both weight formats, and unetkit's own "
        "prediction on the test input gives the same class mask. Measure the model's accuracy "
        "on your own annotated images (`unetkit evaluate`) before you rely on it.\n"
    )


def _cover(path: Path, image: np.ndarray, mask: np.ndarray, palette) -> None:
    from .viz import overlay, save_png, to_rgb8

    rgb = to_rgb8(image if image.shape[2] != 1 else image[:, :, 0])
    save_png(path, np.concatenate([rgb, overlay(image, mask, palette)], axis=1))


def export_bioimageio(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    sample: str | os.PathLike | None = None,
    input_dtype: str = "uint8",
    opset: int = 17,
    check: bool = True,
) -> dict[str, Any]:
    """Write a BioImage.IO model package (zip) of a checkpoint (module docstring).

    Args:
        checkpoint: a unetkit checkpoint file.
        out_path: the zip to write (atomically; nothing is written if a step fails).
        name: the model's name (default: the checkpoint's file stem and task).
        authors: author names (default: ``unetkit user``).
        license: an SPDX licence id.
        sample: an image for the test tensors and the cover (its centre, cut to a legal size
            of at most 256 px a side); None: a synthetic image.
        input_dtype: ``uint8`` or ``uint16``: the integer type the package's input declares
            (its preprocessing divides by the type's maximum, as unetkit does).
        opset: ONNX opset version.
        check: run ``bioimageio.core.test_model`` on the zip before it is put in place.

    Returns:
        ``{"path", "test": {weight format: "passed" | ...}, "test_input", "test_output"}``.

    Raises:
        UnetkitError: a model the package cannot describe, a bad sample, a failed test.
    """
    import torch

    from .checkpoint import load_model
    from .export.contract import input_contract, instance_head, size_contract
    from .export.formats import onnx_bytes

    if input_dtype not in DTYPES:
        raise UnetkitError(f"--input-dtype must be one of {', '.join(DTYPES)}; got {input_dtype!r}")
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as exc:
        raise UnetkitError(
            f"{out_path}: a BioImage.IO package needs {exc.name} "
            "(pip install 'unetkit[bioimageio]')"
        ) from None
    model, ckpt = load_model(checkpoint, "cpu")
    model = model.float().eval()
    card = ckpt.card.for_export()
    cfg = card.model_config
    if card.task == "regression":
        raise UnetkitError(
            f"{checkpoint}: a regression (image-to-image) model is not exported as a BioImage.IO "
            "package (its output has no class probabilities); export it as onnx or torchscript"
        )
    if cfg.head == "pixel_shuffle" or cfg.output_resize:
        raise UnetkitError(
            f"{checkpoint}: a resized output cannot be described as a BioImage.IO axis"
        )
    if instance_head(card) == "distance":
        raise UnetkitError(
            f"{checkpoint}: a distance-head instance model (a softmax over its classes and a "
            "sigmoid distance channel) has no BioImage.IO postprocessing; export it as onnx"
        )
    if instance_head(card) == "offsets":
        raise UnetkitError(
            f"{checkpoint}: an offsets-head instance model (a softmax over its classes and the "
            "boundary, then two raw offset channels) has no BioImage.IO postprocessing; export "
            "it as onnx"
        )
    if instance_head(card) == "rays":
        raise UnetkitError(
            f"{checkpoint}: a rays-head instance model (a softmax over its classes, a sigmoid "
            "distance channel and ray lengths) has no BioImage.IO postprocessing; export it "
            "as onnx"
        )
    if cfg.in_channels not in (1, 3):
        raise UnetkitError(f"{checkpoint}: {cfg.in_channels} input channels; 1 or 3 are exported")
    if card.preprocessing.resize in ("letterbox", "resize"):
        raise UnetkitError(
            f"{checkpoint}: a model trained on images {card.preprocessing.resize}d to "
            f"{card.preprocessing.size[0]}x{card.preprocessing.size[1]} predicts at that scale "
            "only; BioImage.IO runs a model on the image as it is"
        )
    rule = size_contract(model)
    halo = rule["context"]
    least = rule["min"]
    while least - 2 * halo < 1:  # the spec: the smallest output must outlast its halo
        least += rule["step"]
    contract = input_contract(card, model)
    image = _test_image(sample, cfg.in_channels, input_dtype, rule, least)

    from .data.normalize import image_to_tensor

    x = image_to_tensor(image, card.preprocessing)[None]  # (1, C, H, W) float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, check_trace=False)
    with torch.inference_mode():
        probs = model.activate(traced(x)).float().numpy()
    mask = probs[0].argmax(0) if probs.shape[1] > 1 else (probs[0, 0] > 0.5).astype(np.int64)
    out_path = Path(out_path)
    title = name or f"unetkit {Path(checkpoint).stem} {card.task}"
    with tempfile.TemporaryDirectory(prefix="unetkit-bioimageio-") as folder:
        work = Path(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(traced, str(work / "weights.pt"))
        (work / "weights.onnx").write_bytes(onnx_bytes(model, x, opset))
        test_in = image.transpose(2, 0, 1)[None]  # (1, C, H, W) as stored
        np.save(work / "test_input.npy", np.ascontiguousarray(test_in))
        np.save(work / "test_output.npy", probs.astype(np.float32))
        crop = rule["crop"]
        shown = image[crop : crop + mask.shape[0], crop : crop + mask.shape[1]]
        _cover(work / "cover.png", shown, mask, card.palette)
        (work / "README.md").write_text(_readme(card, contract, title))
        descr = _describe(
            card, contract, work, title, authors, license, input_dtype, rule, least, halo, opset
        )
        with atomic_path(out_path) as tmp:
            _save_package(descr, tmp)
            results = test_package(tmp) if check else {}
            failed = {k: v for k, v in results.items() if v != "passed"}
            if failed:
                raise UnetkitError(
                    f"{out_path}: bioimageio test failed: "
                    + "; ".join(f"{k}: {v}" for k, v in failed.items())
                )
    log.debug("exported %s to %s", checkpoint, out_path)
    return {
        "path": str(out_path),
        "test": results,
        "test_input": list(test_in.shape),
        "test_output": list(probs.shape),
    }


def _describe(card, contract, work: Path, title, authors, license, dtype, rule, least, halo, opset):
    import torch
    from bioimageio.spec.model import v0_5

    from .export.contract import activation, channel_names, output_names

    cfg = card.model_config
    inp, outp = v0_5.TensorId("image"), v0_5.TensorId("probabilities")
    size = v0_5.ParameterizedSize(min=least, step=rule["step"])
    in_axes: list[Any] = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(
            channel_names=[v0_5.Identifier(n) for n in channel_names(cfg.in_channels)]
        ),
        v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
        v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size),
    ]

    def out_space(axis: str):
        ref = v0_5.SizeReference(tensor_id=inp, axis_id=v0_5.AxisId(axis), offset=rule["offset"])
        if halo:
            return v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(axis), size=ref, halo=halo)
        return v0_5.SpaceOutputAxis(id=v0_5.AxisId(axis), size=ref)

    names = [_identifier(n) for n in output_names(card)]
    out_axes = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(channel_names=names),
        out_space("y"),
        out_space("x"),
    ]
    act = activation(card)
    post: list = []
    if act == "softmax":
        post.append(v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel"))))
    elif act == "sigmoid":
        post.append(v0_5.SigmoidDescr())
    unetkit_config: dict[str, Any] = {"input_contract": contract, "task": card.task}
    if card.task == "instance":
        unetkit_config["objects"] = card.objects
    torch_version = torch.__version__.split("+")[0]
    return v0_5.ModelDescr(
        name=title,
        description=(
            f"U-Net {card.task} segmentation ({', '.join(card.classes)}), exported by unetkit"
        )[:1024],
        authors=[v0_5.Author(name=a) for a in (authors or [DEFAULT_AUTHOR])],
        cite=[v0_5.CiteEntry(text=UNET_CITATION, doi=v0_5.Doi(UNET_DOI))],
        license=license,
        documentation=v0_5.FileDescr(source=work / "README.md"),
        covers=[v0_5.FileDescr(source=work / "cover.png")],
        tags=["unet", "segmentation", "unetkit", card.task, "2d"],
        inputs=[
            v0_5.InputTensorDescr(
                id=inp,
                axes=in_axes,
                test_tensor=v0_5.FileDescr(source=work / "test_input.npy"),
                data=v0_5.IntervalOrRatioDataDescr(type=dtype),
                preprocessing=_preprocessing(card, cfg.in_channels, dtype),
                description="image, channels in the order named, pixels as stored",
            )
        ],
        outputs=[
            v0_5.OutputTensorDescr(
                id=outp,
                axes=out_axes,
                test_tensor=v0_5.FileDescr(source=work / "test_output.npy"),
                postprocessing=post,
                description=f"class probabilities ({act} of the network's logits)",
            )
        ],
        weights=v0_5.WeightsDescr(
            torchscript=v0_5.TorchscriptWeightsDescr(
                source=work / "weights.pt", pytorch_version=v0_5.Version(torch_version)
            ),
            onnx=v0_5.OnnxWeightsDescr(
                source=work / "weights.onnx", opset_version=opset, parent="torchscript"
            ),
        ),
        config=v0_5.Config(unetkit=unetkit_config),  # type: ignore[call-arg]
    )


def _identifier(name: str) -> str:
    """A channel name the spec accepts (letters, digits, ``_``; not starting with a digit)."""
    text = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "channel"
    return text if not text[0].isdigit() else f"c{text}"


def _save_package(descr, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    try:
        save_bioimageio_package(descr, output_path=path)
    except Exception as exc:  # pydantic / spec errors: one line
        text = " ".join(str(exc).split())[:300]
        raise UnetkitError(f"{path}: BioImage.IO package not valid ({text})") from None


def test_package(path: str | os.PathLike) -> dict[str, str]:
    """``bioimageio.core.test_model`` of a package, per weight format: ``passed`` or the
    first failing check's message."""
    from bioimageio.core import test_model

    results: dict[str, str] = {}
    for fmt in ("torchscript", "onnx"):
        summary = test_model(str(path), weight_format=fmt, devices=["cpu"])
        if summary.status == "passed":
            results[fmt] = "passed"
            continue
        errors = [e for d in summary.details for e in d.errors]
        results[fmt] = "; ".join(f"{e.loc}: {e.msg}" for e in errors[:3])[:300] or summary.status
    return results


test_package.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
