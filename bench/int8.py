"""int8 against bf16 and fp32 on the same models: speed on a 2048 x 2048 image, accuracy on
DSB 2018 dev test images and ISBI 2012 slices 24-29 (``bench/predict.py --int8`` runs it).

Models (``--int8-dir DIR`` keeps and reuses them; a run folder that holds ``best.pt`` is not
trained again): the default command ``unetkit train`` for ``--int8-budget`` minutes each on

* ``dsb``: the 70 training images of ``bench/dsb.py``'s split (nuclei, 2 classes);
* ``isbi``: ISBI 2012 slices 00-23, validated on 24-29 (membranes, 2 classes);
* ``dsb-instance``: the same 70 DSB images with ``--task instance``.

Each is exported with ``unetkit export --int8`` (calibrated on its recorded training images,
gated on its recorded validation images; the bench passes ``--max-loss 100`` so that a model
the gate refuses is still measured, and prints whether 0.5 points would have passed), then
scored through ``Predictor`` defaults on the test images (DSB: the 19 of ``bench/dsb.py``;
ISBI: 24-29, the slices it validated on, as ``bench/isbi.py``): mean IoU and mean Dice in
points (mean IoU over the classes, Dice over the foreground classes, as ``unetkit evaluate``
reports them), and AP@0.5 for the instance model, fp32 / bf16 (PyTorch) / int8 (as ``unetkit
predict`` runs the file: OpenVINO where installed).

Speed (``dsb`` model, the default CPU model: milesial topology, width 16): ``predict_mask`` of
one synthetic 2048 x 2048 RGB image with ``Predictor`` defaults (tiles of 640 px on a CPU), the
median of ``--repeat`` rounds after a warm-up (the runs take turns within a round), megapixels/s
and the ratio to bf16, all in one process: fp32, bf16, int8 (OpenVINO). Plus the network
alone on one 640 x 640 tile (no tiling, no normalisation, no blending), the same three and int8
run by onnxruntime (what predict falls back to without OpenVINO), to show what the pipeline around
the network costs and why OpenVINO runs int8 files.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from dsb import DATA as DSB
from dsb import _link_dataset, split
from dsb_instances import link_dataset

ISBI = DSB.parent / "isbi2012"
ISBI_VAL = [f"{i:02d}" for i in range(24, 30)]
PRECISIONS = ("fp32", "bf16", "int8")
KEYS = {"mean_iou": "mean IoU", "mean_dice": "fg Dice", "ap_50": "AP@0.5"}


def _train(data: Path, run: Path, budget: float, extra: list[str]) -> Path:
    if not (run / "best.pt").is_file():
        cmd = [sys.executable, "-m", "unetkit", "train", str(data), "-o", str(run),
               "--time-budget", str(budget), *extra]  # fmt: skip
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"training {run} failed:\n{done.stderr[-2000:]}")
    return run / "best.pt"


def models(work: Path, budget: float) -> dict[str, tuple[Path, Path, list[str], Path]]:
    """name -> (checkpoint, test dataset folder, test stems, training folder), trained where
    missing."""
    train, test, _ = split()
    for name, link in (("dsb", _link_dataset), ("dsbi", link_dataset)):
        for part, stems in (("train", train), ("test", test)):
            if not (work / f"{name}-{part}").exists():
                link(work / f"{name}-{part}", stems)
    isbi_val = ["--val-stems", ",".join(ISBI_VAL)]
    return {
        "dsb": (
            _train(work / "dsb-train", work / "run-dsb", budget, []),
            work / "dsb-test",
            test,
            work / "dsb-train",
        ),
        "isbi": (_train(ISBI, work / "run-isbi", budget, isbi_val), ISBI, ISBI_VAL, ISBI),
        "dsb-instance": (
            _train(work / "dsbi-train", work / "run-dsbi", budget, ["--task", "instance"]),
            work / "dsbi-test",
            test,
            work / "dsbi-train",
        ),
    }


def export(ckpt: Path, train: Path) -> tuple[Path, dict, float]:
    """int8 export calibrated on the checkpoint's recorded training images, read from the
    bench's own training folder ``train`` (so a checkpoint that does not record its folder,
    or whose folder is gone, is measured too)."""
    from unetkit.quantize import export_int8

    out = ckpt.with_name("model_int8.onnx")
    start = time.perf_counter()
    record = export_int8(ckpt, out, calibrate=train, max_loss=100.0)["int8"]
    return out, record, time.perf_counter() - start


def predictors(ckpt: Path, int8: Path) -> dict:
    from unetkit import PredictConfig, Predictor
    from unetkit.device import cpu_has_bf16
    from unetkit.infer import backends

    runs = {"fp32": Predictor.load(ckpt, PredictConfig(device="cpu", precision="fp32"))}
    if cpu_has_bf16():
        runs["bf16"] = Predictor.load(ckpt, PredictConfig(device="cpu", precision="bf16"))
    runs["int8"] = Predictor.load(int8, PredictConfig(device="cpu"))
    has_openvino = backends._has_openvino
    backends._has_openvino = lambda: False  # what predict runs without OpenVINO
    try:
        runs["int8 onnxruntime"] = Predictor.load(int8, PredictConfig(device="cpu"))
    finally:
        backends._has_openvino = has_openvino
    return runs


def accuracy(runs: dict, folder: Path, stems: list[str]) -> dict[str, dict[str, float]]:
    from unetkit.data.layout import describe_dataset
    from unetkit.quantize import Calibration, score

    calib = Calibration(describe_dataset(folder), [], stems, "")
    return {name: score(p, calib) for name, p in runs.items() if name != "int8 onnxruntime"}


def speed(runs: dict, side: int, repeat: int) -> dict[str, tuple[float, float]]:
    """name -> (MP/s of predict_mask on a side^2 image, MP/s of the network on one tile);
    the runs take turns, ``repeat`` rounds after a warm-up, so that a load on the machine
    weighs on each alike (the median of each)."""
    import torch

    from unetkit.data.synthetic import make_image_and_mask

    image = make_image_and_mask((side, side), seed=2)[0]
    tile = torch.randn(1, 3, 640, 640)
    jobs = {}
    for name, p in runs.items():
        if "onnxruntime" not in name:  # onnxruntime: the network alone (an image takes minutes)
            jobs[(name, 0)] = (lambda p=p: p.predict_mask(image), side * side)
        jobs[(name, 1)] = (lambda p=p: p.network.run(tile), 640 * 640)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in jobs}
    with torch.inference_mode():
        for fn, _ in jobs.values():
            fn()
        for _ in range(repeat):
            for key, (fn, _) in jobs.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)

    def rate(name: str, kind: int) -> float:
        if (name, kind) not in jobs:
            return float("nan")
        return jobs[(name, kind)][1] / 1e6 / statistics.median(times[(name, kind)])

    return {name: (rate(name, 0), rate(name, 1)) for name in runs}


def run(args) -> None:
    import torch

    work = Path(args.int8_dir) if args.int8_dir else Path(__import__("tempfile").mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    print(f"\nint8 (issue 27): models in {work}, trained {args.int8_budget:g} min each where "
          f"missing; {torch.get_num_threads()} threads")  # fmt: skip
    found = models(work, args.int8_budget)
    table = []
    speeds = None
    for name, (ckpt, folder, stems, train) in found.items():
        int8, record, seconds = export(ckpt, train)
        gate = record["gate"]
        worst = max(gate["loss"].values())
        print(f"{name}: export --int8 {seconds:.0f} s, {record['calibration']['tiles']} tiles; "
              f"gate on {gate['images']} val images: worst loss {worst:+.2f} points "
              f"({'passes' if worst <= 0.5 else 'REFUSED at'} --max-loss 0.5), "
              f"run by {gate['runtime']}")  # fmt: skip
        runs = predictors(ckpt, int8)
        table.append((name, len(stems), accuracy(runs, folder, stems)))
        if name == "dsb":
            speeds = speed(runs, args.compare_size, args.repeat)
    assert speeds is not None
    print(f"\nspeed: dsb model (default CPU model, width 16), {args.compare_size}^2 RGB, "
          "Predictor defaults; median of --repeat runs")  # fmt: skip
    print(f"{'run':<18}{'MP/s':>8}{'vs bf16':>9}{'net MP/s':>10}{'vs bf16':>9}")
    base = speeds.get("bf16", speeds["fp32"])
    for name, (rate, net) in speeds.items():
        print(f"{name:<18}{rate:>8.2f}{rate / base[0]:>8.2f}x{net:>10.2f}{net / base[1]:>8.2f}x")
    print("\naccuracy on the test images, points (diff: int8 - fp32)")
    print(f"{'model':<14}{'n':>3}  {'metric':<9}{'fp32':>8}{'bf16':>8}{'int8':>8}{'diff':>8}")
    for name, n, scores in table:
        for key in scores["fp32"]:
            row = [scores[p][key] if p in scores else float("nan") for p in PRECISIONS]
            print(f"{name:<14}{n:>3}  {KEYS[key]:<9}" + "".join(f"{v:>8.2f}" for v in row)
                  + f"{row[2] - row[0]:>+8.2f}")  # fmt: skip
