"""The model commands: ``models`` (the presets), ``info`` (a checkpoint), ``export``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UnetkitError


def models_cmd(
    size: int = typer.Option(256, "--size", help="Square input size for the table."),
    in_channels: int = typer.Option(None, "--in-channels", help="Override input channels."),
    num_classes: int = typer.Option(
        None,
        "--num-classes",
        help="Override classes/outputs.",
        show_default="the preset's",  # not compare's "from the data" (UNSET_DEFAULTS)
    ),
) -> None:
    """List the model presets: parameters, output size and GFLOPs for a --size input."""
    from ..summary import preset_table

    overrides = {}
    if in_channels is not None:
        overrides["in_channels"] = in_channels
    if num_classes is not None:
        overrides["out_channels"] = num_classes
    typer.echo(preset_table(size, **overrides))


def info_cmd(checkpoint: Path = typer.Argument(..., help="A unetkit checkpoint (.pt).")) -> None:
    """Show a checkpoint's model config, classes, preprocessing and training state."""
    from ..summary import checkpoint_summary

    typer.echo(checkpoint_summary(checkpoint))


def export_cmd(
    model: Path = typer.Argument(..., help="A unetkit checkpoint (.pt)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript | bioimageio"),
    out: Path = typer.Option(..., "-o", "--out", help="The exported file (bioimageio: a .zip)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Parity check; bioimageio: bioimageio.core's test."
    ),
    sample: Path = typer.Option(
        None, "--sample", help="bioimageio: image for the test tensors and cover (else synthetic)."
    ),
    author: list[str] = typer.Option(
        None, "--author", help="bioimageio: an author's name (repeat for several)."
    ),
    license_id: str = typer.Option("CC-BY-4.0", "--license", help="bioimageio: SPDX licence."),
    name: str = typer.Option(None, "--name", help="bioimageio: the model's name."),
    input_dtype: str = typer.Option(
        "uint8", "--input-dtype", help="bioimageio: the images' type, uint8 | uint16."
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="onnx: int8 weights and activations (NNCF; runs with OpenVINO), calibrated on "
        "the model's training images, refused if it loses accuracy (--max-loss).",
    ),
    calibrate: Path = typer.Option(
        None,
        "--calibrate",
        help="--int8: a dataset folder (images + masks) to calibrate and gate on, instead of "
        "the one the model records; its recorded split is used where the folder holds it.",
        show_default="the model's training data",
    ),
    max_loss: float = typer.Option(
        0.5,
        "--max-loss",
        help="--int8: points of mean IoU / Dice (and AP@0.5 for instance models) int8 may "
        "lose against full precision on the validation images.",
    ),
    keep_float: str = typer.Option(
        "none",
        "--keep-float",
        help="--int8: convolutions left in float: none | first | last | ends.",
    ),  # fmt: skip
) -> None:
    """Export to ONNX / TorchScript with the model's metadata, then check parity; or to a
    BioImage.IO model package, then test it with bioimageio.core. With --int8: an int8 ONNX
    file, checked against full precision on the model's validation images."""
    if fmt == "bioimageio":
        from ..bioimageio import export_bioimageio

        package = export_bioimageio(
            model, out, name=name, authors=author or None, license=license_id,
            sample=sample, input_dtype=input_dtype, opset=opset, check=check,
        )  # fmt: skip
        for weights, status in package["test"].items():
            typer.echo(f"bioimageio test {weights}: {status}")
        typer.echo(f"exported bioimageio: {out}")
        return
    from ..export import export_model

    if int8:
        from ..quantize import export_int8, gate_line

        if fmt != "onnx":
            raise UnetkitError(f"--int8 exports ONNX only (--format onnx); got {fmt!r}")
        record = export_int8(
            model, out, calibrate, max_loss=max_loss, opset=opset, keep_float=keep_float
        )["int8"]
        typer.echo(f"int8 accuracy: {gate_line(record['gate'], max_loss)}")
        typer.echo(f"exported onnx int8: {out}")
        return
    if calibrate is not None:
        raise UnetkitError("--calibrate needs --int8")
    result = export_model(model, fmt, out, opset=opset, check=check)
    for row in result["parity"]:
        h, w = row["size"]
        typer.echo(
            f"parity {h}x{w}: max |logit diff| {row['max_abs_diff']:.2e}, "
            f"argmax agreement {100 * row['agreement']:.4f} %"
        )
    typer.echo(f"exported {fmt}: {out}")
