"""Evaluation against hand-computed confusion matrices; model-on-dataset == predict + dirs.

Guards (the mutation each one kills):

* ``test_0_255_ground_truth_is_mapped``: ``evaluate`` without the 0/255 mapping (255 counted
  as ignore: an all-background prediction scored mean IoU 1.0).
* ``test_0_255_predictions_are_mapped``: predicted 0/255 masks read as 256 classes.
* ``test_0_255_is_decided_from_every_ground_truth_mask``: deciding from the first mask only.
* ``test_mixed_0_1_and_0_255_ground_truth_is_an_error``: a silent guess on mixed masks.
* ``test_adapted_rand_error_is_opt_in``: the Rand error reported for every 2-class task.
* ``test_evaluate_model_maps_0_255_and_passes_rand_error``: both, through ``evaluate_model``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from realdata import ISBI
from unetkit import (
    DataConfig,
    PredictConfig,
    UnetkitError,
    load_checkpoint,
    save_checkpoint,
)
from unetkit.cli import main
from unetkit.infer import Predictor, evaluate_dirs, evaluate_model, predict_paths
from unetkit.infer.evaluate import score_pairs, select_stems
from unetkit.infer.report import write_report
from unetkit.metrics import membrane_rand_error

NAMES = ["bg", "a", "b"]


def _save(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def three_class_dirs(tmp_path) -> tuple[Path, Path]:
    """Two images; the ignored gt pixel (255) is predicted as class 2 and must count nowhere."""
    gt1 = np.array([[0, 0, 1], [1, 2, 255]])
    pr1 = np.array([[0, 1, 1], [1, 0, 2]])
    gt2 = np.array([[2, 2], [0, 1]])
    pr2 = np.array([[2, 0], [0, 1]])
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name, p, g in (("x", pr1, gt1), ("y", pr2, gt2)):
        _save(pred / f"{name}.png", p)
        _save(gt / f"{name}.png", g)
    _save(pred / "x_color.png", np.zeros((2, 3)))  # predict's extra outputs are not masks
    return pred, gt


def test_three_classes_by_hand(three_class_dirs, tmp_path):
    pred, gt = three_class_dirs
    out = tmp_path / "report"
    metrics = evaluate_dirs(pred, gt, out, class_names=NAMES)
    # rows = truth, columns = prediction; image x: (0,0) (0,1) (1,1) (1,1) (2,0); image y:
    # (2,2) (2,0) (0,0) (1,1)
    expected = np.array([[2, 1, 0], [0, 3, 0], [2, 0, 1]])
    table = _read_csv(out / "confusion.csv")
    assert [r["true\\pred"] for r in table] == NAMES
    assert np.array([[int(r[n]) for n in NAMES] for r in table]).tolist() == expected.tolist()
    # IoU: bg 2/(2+2+1) = 0.4, a 3/(3+1) = 0.75, b 1/(1+2) = 1/3; accuracy 6/9
    per_class = metrics["per_class"]
    assert per_class["bg"]["iou"] == pytest.approx(0.4)
    assert per_class["a"]["iou"] == pytest.approx(0.75)
    assert per_class["b"]["iou"] == pytest.approx(1 / 3)
    assert per_class["b"]["precision"] == pytest.approx(1.0)
    assert per_class["b"]["recall"] == pytest.approx(1 / 3)
    assert per_class["a"]["support"] == 3
    assert metrics["mean_iou"] == pytest.approx((0.4 + 0.75 + 1 / 3) / 3)
    assert metrics["mean_dice"] == pytest.approx((6 / 7 + 2 / 4) / 2)  # foreground classes
    assert metrics["pixel_accuracy"] == pytest.approx(6 / 9)
    assert "adapted_rand_error" not in metrics  # only for two-class tasks
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mean_iou"] == pytest.approx(metrics["mean_iou"]) and saved["images"] == 2
    rows = _read_csv(out / "per_image.csv")
    assert [r["image"] for r in rows] == ["x", "y"]
    assert float(rows[0]["pixel_accuracy"]) == pytest.approx(3 / 5)
    assert float(rows[1]["iou_b"]) == pytest.approx(1 / 2)
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_binary_tasks_add_the_isbi_errors(tmp_path):
    gt = np.zeros((8, 8), np.uint8)
    gt[4, :] = 1  # a membrane line splits the image into two cells
    merged = np.zeros((8, 8), np.uint8)  # the membrane missed: one cell
    _save(tmp_path / "gt" / "good.png", gt)
    _save(tmp_path / "gt" / "bad.png", gt)
    _save(tmp_path / "pred" / "good.png", gt)
    _save(tmp_path / "pred" / "bad.png", merged)
    metrics = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", tmp_path / "r", num_classes=2, rand_error=True
    )
    rows = {r["image"]: r for r in _read_csv(tmp_path / "r" / "per_image.csv")}
    assert float(rows["good"]["adapted_rand_error"]) == 0.0
    # gt cells of 32 and 24 px merged into one predicted segment of 56 scored px:
    # 1 - 2 * (32^2 + 24^2) / ((32^2 + 24^2) + 56^2)
    bad = 1 - 2 * 1600 / (1600 + 3136)
    assert float(rows["bad"]["adapted_rand_error"]) == pytest.approx(bad)
    assert float(rows["bad"]["pixel_error"]) == pytest.approx(8 / 64)
    assert metrics["pixel_error"] == pytest.approx(8 / 128)
    assert metrics["adapted_rand_error"] == pytest.approx(bad / 2)


def _quarter(value: int) -> np.ndarray:
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = value  # 4 of 16 pixels
    return mask


def test_0_255_ground_truth_is_mapped(tmp_path, caplog):
    _save(tmp_path / "gt" / "a.png", _quarter(255))
    _save(tmp_path / "pred" / "a.png", np.zeros((4, 4)))  # all background
    with caplog.at_level(logging.INFO, logger="unetkit.infer.evaluate"):
        metrics = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r")
    assert metrics["classes"] == ["0", "1"] and metrics["pixels"] == 16
    assert metrics["per_class"]["1"]["iou"] == 0.0 and metrics["per_class"]["1"]["support"] == 4
    assert metrics["per_class"]["0"]["iou"] == pytest.approx(12 / 16)
    assert metrics["mean_iou"] == pytest.approx((12 / 16 + 0) / 2)
    assert metrics["pixel_error"] == pytest.approx(4 / 16)
    assert "ground truth: masks are 0/255: mapped to classes 0/1 (1 masks checked)" in caplog.text
    named = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", tmp_path / "r2", class_names=["b", "f"]
    )
    assert named["per_class"]["f"]["iou"] == 0.0 and named["mean_iou"] == metrics["mean_iou"]


def test_0_255_predictions_are_mapped(tmp_path, caplog):
    _save(tmp_path / "gt" / "a.png", _quarter(1))
    _save(tmp_path / "pred" / "a.png", _quarter(255))
    with caplog.at_level(logging.INFO, logger="unetkit.infer.evaluate"):
        metrics = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r")
    assert metrics["classes"] == ["0", "1"]
    assert metrics["mean_iou"] == 1.0 and metrics["pixel_error"] == 0.0
    assert "predictions: masks are 0/255: mapped to classes 0/1 (1 masks checked)" in caplog.text


def test_0_255_is_decided_from_every_ground_truth_mask(tmp_path):
    for stem, gt in (("a", np.zeros((4, 4))), ("b", _quarter(255))):  # "a": empty, sorted first
        _save(tmp_path / "gt" / f"{stem}.png", gt)
        _save(tmp_path / "pred" / f"{stem}.png", np.zeros((4, 4)))
    metrics = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r", num_classes=2)
    assert metrics["per_class"]["1"]["support"] == 4 and metrics["pixels"] == 32
    assert metrics["mean_iou"] == pytest.approx((28 / 32 + 0) / 2)


def test_mixed_0_1_and_0_255_ground_truth_is_an_error(tmp_path):
    for stem, gt in (("a", _quarter(1)), ("b", _quarter(255))):
        _save(tmp_path / "gt" / f"{stem}.png", gt)
        _save(tmp_path / "pred" / f"{stem}.png", np.zeros((4, 4)))
    with pytest.raises(UnetkitError, match=r"b\.png: a 0/255 mask, but a\.png is 0/1"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r")
    # with more than two classes 255 is the ignore index: nothing to map, nothing mixed
    metrics = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r", num_classes=3)
    assert metrics["per_class"]["1"]["support"] == 4 and metrics["pixels"] == 28


def test_adapted_rand_error_is_opt_in(tmp_path):
    gt = np.zeros((8, 8), np.uint8)
    gt[4, :] = 1
    _save(tmp_path / "gt" / "a.png", gt)
    _save(tmp_path / "pred" / "a.png", np.zeros((8, 8)))
    plain = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r", num_classes=2)
    assert "adapted_rand_error" not in plain and plain["pixel_error"] == pytest.approx(8 / 64)
    row = _read_csv(tmp_path / "r" / "per_image.csv")[0]
    assert "adapted_rand_error" not in row and float(row["pixel_error"]) == pytest.approx(8 / 64)
    asked = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r2", rand_error=True)
    assert asked["adapted_rand_error"] == pytest.approx(1 - 2 * 1600 / (1600 + 3136))
    pairs = [("a", np.zeros((2, 2), int), np.zeros((2, 2), int))]
    assert "adapted_rand_error" not in score_pairs(pairs, ["bg", "membrane"])[0]
    with pytest.raises(UnetkitError, match="adapted Rand error needs 2 classes"):
        score_pairs(pairs, NAMES, rand_error=True)


def test_evaluate_model_maps_0_255_and_passes_rand_error(tmp_path, tiny_model, tiny_checkpoint):
    rng = np.random.default_rng(1)
    root = tmp_path / "bin"
    for i in range(2):
        mask = np.zeros((20, 24), np.uint8)
        mask[rng.integers(0, 20, 60), rng.integers(0, 24, 60)] = 255
        _save(root / "images" / f"{i}.png", rng.integers(0, 256, (20, 24)))
        _save(root / "masks" / f"{i}.png", mask)
    model = tiny_model(in_channels=1, out_channels=2)
    torch.nn.init.constant_(model.head[0].bias, 0.0)
    model.head[0].bias.data[0] = 100.0  # always background
    pre = DataConfig(channels=1, size=(32, 32))
    ckpt = tiny_checkpoint(model, classes=["background", "class1"], preprocessing=pre)
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    fp32 = PredictConfig(precision="fp32")
    plain = evaluate_model(path, root, tmp_path / "r", config=fp32, device="cpu", progress=False)
    assert plain["per_class"]["class1"]["iou"] == 0.0 and plain["per_class"]["class1"]["support"]
    assert "adapted_rand_error" not in plain
    asked = evaluate_model(
        path, root, tmp_path / "r2", config=fp32, device="cpu", progress=False, rand_error=True
    )
    expected = np.mean(
        [
            membrane_rand_error(np.zeros((20, 24), int), np.asarray(Image.open(m)) // 255)
            for m in sorted((root / "masks").iterdir())
        ]
    )
    assert asked["adapted_rand_error"] == pytest.approx(expected)


def test_class_count_is_inferred_and_bad_values_are_reported(three_class_dirs, tmp_path):
    pred, gt = three_class_dirs
    metrics = evaluate_dirs(pred, gt, tmp_path / "r")
    assert metrics["classes"] == ["0", "1", "2"]
    with pytest.raises(UnetkitError, match=r"x\.png: mask values 0\.\.2 outside 0\.\.1"):
        evaluate_dirs(pred, gt, tmp_path / "r2", num_classes=2)
    with pytest.raises(UnetkitError, match="no masks with the same name"):
        evaluate_dirs(pred, tmp_path / "r", tmp_path / "r3")


def test_split_selection():
    info = SimpleNamespace(
        root="d",
        stems=["a", "b", "c"],
        split={"val": ["c"], "train": ["a"]},
        image_files={"a": 1, "b": 2, "c": 3},
    )
    assert select_stems(info) == ["c"]
    assert select_stems(info, "all") == ["a", "b", "c"]
    assert select_stems(info, "train") == ["a"]
    with pytest.raises(UnetkitError, match=r"no split 'test' \(known: all, val, train\)"):
        select_stems(info, "test")
    assert select_stems(SimpleNamespace(**{**vars(info), "split": None})) == ["a", "b", "c"]


@pytest.fixture()
def dataset(tmp_path, tiny_model, tiny_checkpoint) -> tuple[Path, Path]:
    """An images/ + masks/ folder (3 images) and a tiny 3-class checkpoint."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for i, (h, w) in enumerate([(24, 30), (40, 20), (17, 33)]):
        _save(root / "images" / f"{i:02d}.png", rng.integers(0, 256, (h, w)))
        _save(root / "masks" / f"{i:02d}.png", rng.integers(0, 3, (h, w)))
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    model = tiny_model(in_channels=1, out_channels=3)
    torch.nn.init.normal_(model.head[0].bias, std=0.1)  # several classes predicted
    pre = DataConfig(channels=1, size=(32, 32))
    ckpt = tiny_checkpoint(model, classes=NAMES, preprocessing=pre)
    return root, save_checkpoint(ckpt, tmp_path / "m.pt")


def test_evaluate_model_equals_predict_then_evaluate_dirs(dataset, tmp_path):
    root, ckpt = dataset
    fp32 = PredictConfig(precision="fp32")
    direct = evaluate_model(ckpt, root, tmp_path / "d", config=fp32, device="cpu", progress=False)
    predictor = Predictor.from_checkpoint(ckpt, fp32, "cpu")
    predict_paths(predictor, [root / "images"], tmp_path / "pred", progress=False)
    via_files = evaluate_dirs(tmp_path / "pred", root / "masks", tmp_path / "r", class_names=NAMES)
    assert direct["images"] == 3 and direct["split"] == "auto"
    for key in ("mean_iou", "mean_dice", "pixel_accuracy", "per_class"):
        assert direct[key] == via_files[key]
    model, data, cli = str(ckpt), str(root), tmp_path / "cli"
    assert main(["evaluate", model, data, "-o", str(cli), "--precision", "fp32"]) == 0
    saved = json.loads((cli / "metrics.json").read_text())
    assert saved["mean_iou"] == pytest.approx(direct["mean_iou"])
    pred, gt = str(tmp_path / "pred"), str(root / "masks")
    assert main(["compare", pred, gt, "-o", str(tmp_path / "c2"), "--classes", "bg,a,b"]) == 0
    assert main(["evaluate", model, data, "-o", str(tmp_path / "x"), "--split", "v"]) == 2
    # a folder of masks given to evaluate: one line pointing to compare, nothing written
    assert main(["evaluate", pred, gt, "-o", str(tmp_path / "c3")]) == 2
    assert not (tmp_path / "c3").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (ISBI / "masks").is_dir(), reason="ISBI 2012 data not available")
def test_isbi_membrane_masks(tmp_path):
    """Real membrane masks (crops): a perfect prediction scores 0 errors, a thickened one not."""
    import cv2

    for stem in ("24", "25"):
        gt = np.asarray(Image.open(ISBI / "masks" / f"{stem}.png"))[:128, :128]
        _save(tmp_path / "gt" / f"{stem}.png", gt)
        _save(tmp_path / "same" / f"{stem}.png", gt)
        _save(tmp_path / "thick" / f"{stem}.png", cv2.dilate(gt, np.ones((5, 5), np.uint8)))
    same = evaluate_dirs(tmp_path / "same", tmp_path / "gt", tmp_path / "r1", rand_error=True)
    assert same["mean_iou"] == 1.0 and same["pixel_error"] == 0.0
    assert same["adapted_rand_error"] == 0.0
    thick = evaluate_dirs(tmp_path / "thick", tmp_path / "gt", tmp_path / "r2", rand_error=True)
    assert 0 < thick["pixel_error"] < 0.5 and thick["adapted_rand_error"] > 0.0
    assert thick["per_class"]["1"]["recall"] == 1.0  # dilation only adds membrane


def test_evaluate_scores_only_images_the_model_did_not_train_on(dataset, tmp_path, caplog):
    """Bug 9.8: ``evaluate MODEL DATASET`` on an images/ + masks/ folder (no split of its own)
    scored the training images too; the checkpoint's recorded split decides."""
    root, ckpt_path = dataset
    ckpt = load_checkpoint(ckpt_path)
    ckpt.train_state = {"data": {"classes": NAMES, "train": ["00", "01"], "val": ["02"]}}
    model = save_checkpoint(ckpt, tmp_path / "trained.pt")
    fp32 = PredictConfig(precision="fp32", device="cpu")
    with caplog.at_level(logging.INFO, logger="unetkit"):
        metrics = evaluate_model(model, root, tmp_path / "r", config=fp32, progress=False)
    assert metrics["images"] == 1 and metrics["stems"] == ["02"]
    assert "validation images recorded in the checkpoint" in caplog.text
    # --split all scores everything, and says how many were training images
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unetkit"):
        metrics = evaluate_model(model, root, tmp_path / "a", "all", fp32, progress=False)
    assert metrics["images"] == 3 and "2 of them were used in training" in caplog.text
    # a model trained on every image of the folder: nothing held out, refused
    ckpt.train_state = {"data": {"classes": NAMES, "train": ["00", "01", "02"], "val": []}}
    model = save_checkpoint(ckpt, tmp_path / "all.pt")
    with pytest.raises(UnetkitError, match="nothing held out"):
        evaluate_model(model, root, tmp_path / "n", config=fp32, progress=False)
    # a folder the model never saw: all of it
    ckpt.train_state = {"data": {"classes": NAMES, "train": ["x1"], "val": ["x2"]}}
    model = save_checkpoint(ckpt, tmp_path / "other.pt")
    metrics = evaluate_model(model, root, tmp_path / "o", config=fp32, progress=False)
    assert metrics["images"] == 3


def test_cli_rand_error_is_opt_in(tmp_path, capsys):
    gt = np.zeros((8, 8), np.uint8)
    gt[4, :] = 1
    _save(tmp_path / "gt" / "a.png", gt)
    _save(tmp_path / "pred" / "a.png", gt)
    args = ["compare", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o"]
    assert main([*args, str(tmp_path / "r1"), "--num-classes", "2"]) == 0
    assert "adapted_rand_error" not in capsys.readouterr().out
    assert main([*args, str(tmp_path / "r2"), "--num-classes", "2", "--rand-error"]) == 0
    assert "adapted_rand_error" in capsys.readouterr().out


def _two_touching() -> tuple[np.ndarray, np.ndarray]:
    """A class mask with two touching squares, and their instance ids."""
    ids = np.zeros((20, 30), np.uint16)
    ids[2:12, 2:12], ids[2:12, 12:22] = 1, 2
    return (ids > 0).astype(np.uint8), ids


def test_objects_of_a_mask_folder_merged_or_separated(tmp_path):
    """Truth by connected components merges the two squares; predicted instances beside
    the masks (NAME_instances.png) are used instead of the mask's components."""
    mask, ids = _two_touching()
    _save(tmp_path / "gt" / "a.png", mask)
    _save(tmp_path / "pred" / "a.png", mask)
    m = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r1")
    assert m["objects"]["n_true"] == 1 and m["objects"]["ap_50"] == 1.0
    Image.fromarray(ids).save(tmp_path / "pred" / "a_instances.png")
    m = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r2")
    assert m["objects"]["n_pred"] == 2 and m["objects"]["splits"] == 1
    assert m["objects"]["ap_50"] == 0.0  # neither half covers more than half the union
    row = _read_csv(tmp_path / "r2" / "per_image.csv")[0]
    assert row["obj_n_pred"] == "2" and row["obj_splits"] == "1"
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["objects"]["images"] == 1


def test_empty_prediction_scores_no_objects(tmp_path):
    mask, _ = _two_touching()
    _save(tmp_path / "gt" / "a.png", mask)
    _save(tmp_path / "pred" / "a.png", np.zeros_like(mask))
    m = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "r")
    assert m["objects"]["ap_50"] == 0.0 and m["objects"]["map"] == 0.0
    assert m["objects"]["count_error"] == 1.0


def test_object_classes_must_agree(tmp_path):
    gt = np.zeros((10, 20), np.uint8)
    gt[2:8, 2:8], gt[2:8, 12:18] = 1, 2
    pred = gt.copy()
    pred[2:8, 12:18] = 1  # right place, wrong class
    metrics, rows, _ = score_pairs([("x", pred, gt)], NAMES)
    assert metrics["objects"]["ap_50"] == pytest.approx(1 / 3)  # TP 1, FP 1, FN 1
    assert rows[0]["obj_map"] == pytest.approx(1 / 3)


def _all_foreground(tmp_path, tiny_model, tiny_checkpoint):
    """(a model predicting every pixel as foreground, a folder of one image with two touching
    true objects in instances/)."""
    root = tmp_path / "data"
    mask, ids = _two_touching()
    image = np.full((20, 30), 128, np.uint8)
    _save(root / "images" / "a.png", image)
    _save(root / "masks" / "a.png", mask)
    (root / "instances").mkdir()
    Image.fromarray(ids).save(root / "instances" / "a.png")
    (root / "classes.txt").write_text("background\nnucleus\n")
    model = tiny_model(in_channels=1, out_channels=2)
    torch.nn.init.constant_(model.head[0].bias, 0.0)
    model.head[0].bias.data[1] = 100.0  # always foreground
    ckpt = tiny_checkpoint(model, classes=["background", "nucleus"],
                           preprocessing=DataConfig(channels=1, size=(32, 32)))  # fmt: skip
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    return path, root


def test_evaluate_model_uses_the_dataset_instances(tmp_path, tiny_model, tiny_checkpoint):
    """A model predicting every pixel as foreground against a folder with instances/."""
    path, root = _all_foreground(tmp_path, tiny_model, tiny_checkpoint)
    m = evaluate_model(path, root, tmp_path / "r", split="all", device="cpu", progress=False)
    assert m["objects"]["truth"] == "instances/" and m["objects"]["n_true"] == 2
    assert m["objects"]["n_pred"] == 1 and m["objects"]["merges"] == 1


def test_cli_evaluate_prints_the_count_merges_and_splits(tmp_path, tiny_model, tiny_checkpoint,
                                                         capsys):  # fmt: skip
    """What a count is trusted by, on the console: predicted / true objects, merges, splits
    (one all-foreground object over two touching true ones: 1 / 2, 1 merge)."""
    path, root = _all_foreground(tmp_path, tiny_model, tiny_checkpoint)
    args = ["evaluate", str(path), str(root), "-o", str(tmp_path / "r"), "--split", "all",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "objects count        1 predicted / 2 true, 1 merges, 0 splits" in out


def test_report_csv_files_are_these_bytes(tmp_path):
    """``per_image.csv`` and ``confusion.csv`` byte for byte (names that need quoting)."""
    pred, gt = np.array([[0, 1], [1, 2]]), np.array([[0, 1], [2, 2]])
    names = ["bg", "cell", 'x"y']
    metrics, rows, matrix = score_pairs([("a,b.png", pred, gt)], names, objects=False)
    write_report(tmp_path, metrics, rows, matrix, names)
    assert (tmp_path / "per_image.csv").read_bytes() == (
        b'image,pixels,pixel_accuracy,mean_iou,mean_dice,iou_bg,iou_cell,"iou_x""y"\n'
        b'"a,b.png",4,0.75,0.6666666666666666,0.6666666666666666,1.0,0.5,0.5\n'
    )
    assert (tmp_path / "confusion.csv").read_bytes() == (
        b'true\\pred,bg,cell,"x""y"\nbg,1,0,0\ncell,0,1,0\n"x""y",0,1,1\n'
    )
