"""Do the object files read back right in other tools' own readers? (the demo model's objects)

Trains the demo (``unetkit demo``, cells with nuclei as holes) unless ``--demo`` names one,
predicts its validation images with ``--coco --geojson --labelme``, and reads the files back
with pycocotools, shapely and labelme against the instance PNGs written beside them:

* COCO: each annotation rasterised by pycocotools (``annToMask``) against its object (IoU;
  exact = the same pixels), ``area`` against the pixels the segmentation encodes, and COCO
  mask mAP against the demo's true instances, from ``coco.json`` and from the instance PNGs
  (RLE of the PNGs, the same scores): equal when the file is exact;
* GeoJSON: geometries shapely finds invalid, polygon areas equal to / within 5 % of the pixel
  count, holes kept, feature ids repeated across the images;
* labelme: ``labelme.utils.shape_to_mask`` of each object's shapes against the object.

``--base-src`` runs the same with another checkout's ``src`` (e.g. the commit before) in the
same run, as a reference row:

    python bench/interop.py --out /tmp/interop
    git worktree add /tmp/base 69430ad && python bench/interop.py --base-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def run_unetkit(args: list[str], src: str | None = None) -> None:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    subprocess.run([sys.executable, "-m", "unetkit", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def coco_map(gt: dict, annotations: list[dict]) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(annotations), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    code = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": code["size"], "counts": code["counts"].decode()}


def measure(pred: Path, truth_dir: Path) -> dict:
    from pycocotools.coco import COCO
    from shapely.geometry import shape

    doc = json.loads((pred / "coco.json").read_text())
    for ann in doc["annotations"]:
        ann.setdefault("score", 1.0)  # a data-set file only: every prediction scored 1
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = doc
        coco.createIndex()
    ious, area_ok, from_png = [], 0, []
    gt: dict = {"images": [], "annotations": [], "categories": doc["categories"]}
    for image in doc["images"]:
        stem = Path(image["file_name"]).stem
        ids = np.asarray(Image.open(pred / f"{stem}_instances.png")).astype(np.int64)
        anns = coco.imgToAnns[image["id"]]
        present = [int(i) for i in np.unique(ids) if i > 0]
        for n, ann in enumerate(anns):
            object_id = ann.get("object_id", present[n] if n < len(present) else -1)
            obj = ids == object_id
            drawn = coco.annToMask(ann).astype(bool)
            ious.append((drawn & obj).sum() / max((drawn | obj).sum(), 1))
            area_ok += int(round(ann["area"]) == int(drawn.sum()))
            from_png.append({"image_id": image["id"], "category_id": ann["category_id"],
                             "segmentation": rle(obj), "score": ann["score"]})  # fmt: skip
        truth = np.asarray(Image.open(truth_dir / f"{stem}.png")).astype(np.int64)
        gt["images"].append(image)
        classes = np.asarray(Image.open(truth_dir.parent / "masks" / f"{stem}.png"))
        for object_id in (int(i) for i in np.unique(truth) if i > 0):
            obj = truth == object_id
            cls = int(np.bincount(classes[obj].ravel()).argmax())
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image["id"],
                                      "category_id": cls, "segmentation": rle(obj),
                                      "area": int(obj.sum()), "iscrowd": 0})  # fmt: skip
    ious_a = np.asarray(ious)
    row = {
        "objects": len(ious),
        "coco_exact": float(np.mean(ious_a >= 1.0)),
        "coco_iou_median": float(np.median(ious_a)),
        "coco_iou_min": float(ious_a.min()),
        "coco_area_ok": area_ok / max(len(ious), 1),
        "map_file": coco_map(gt, doc["annotations"]),
        "map_png": coco_map(gt, from_png),
    }
    invalid, exact, near, holes, ids_seen, repeated = 0, 0, 0, 0, set(), 0
    features = 0
    for path in sorted(pred.glob("*.geojson")):
        ids = np.asarray(Image.open(pred / f"{path.stem}_instances.png")).astype(np.int64)
        areas = np.bincount(ids.ravel())
        for feature in json.loads(path.read_text())["features"]:
            features += 1
            geometry = shape(feature["geometry"])
            invalid += int(not geometry.is_valid)
            props = feature["properties"]
            pixels = areas[props["object_id"]]
            if props.get("nucleus_object_id"):
                pixels += areas[props["nucleus_object_id"]]
            exact += int(abs(geometry.area - pixels) < 1e-6)
            near += int(abs(geometry.area - pixels) <= 0.05 * pixels)
            polys = getattr(geometry, "geoms", [geometry])
            holes += sum(len(p.interiors) for p in polys)
            repeated += int(feature["id"] in ids_seen)
            ids_seen.add(feature["id"])
    n = max(features, 1)
    row.update({"geo_features": features, "geo_invalid": invalid, "geo_area_exact": exact / n,
                "geo_area_5pct": near / n, "geo_holes": holes,
                "geo_repeated_ids": repeated})  # fmt: skip
    try:
        from labelme.utils import shape_to_mask
    except ImportError:
        return row
    agree = []
    for path in sorted(pred.glob("*.json")):
        if path.name in ("coco.json",):
            continue
        doc = json.loads(path.read_text())
        ids = np.asarray(Image.open(pred / f"{path.stem}_instances.png")).astype(np.int64)
        painted = np.zeros_like(ids)
        for shape_ in doc["shapes"]:
            drawn = shape_to_mask(ids.shape, shape_["points"], "polygon")
            painted[drawn] = shape_["group_id"]
        agree.append(float(np.mean(painted == ids)))
    row["labelme_pixel_agreement"] = float(np.mean(agree))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/unetkit-interop")
    parser.add_argument("--demo", default=None, help="an existing demo folder")
    parser.add_argument("--budget", type=float, default=1.0, help="demo training minutes")
    parser.add_argument("--base-src", default=None, help="a reference checkout's src/")
    args = parser.parse_args()
    out = Path(args.out)
    demo = Path(args.demo) if args.demo else out / "demo"
    if not (demo / "run" / "best.pt").is_file():
        run_unetkit(["demo", "-o", str(demo), "--time-budget", str(args.budget), "--curve", ""])
    split = json.loads((demo / "dataset" / "dataset.json").read_text())["split"]
    images = [str(demo / "dataset" / "images" / f"{s}.png") for s in split["val"]]
    rows = {}
    for name, src in (("base", args.base_src), ("this", None)):
        if name == "base" and not src:
            continue
        pred = out / f"pred-{name}"
        run_unetkit(["predict", str(demo / "run" / "best.pt"), *images, "-o", str(pred),
                     "--coco", "--geojson", "--labelme", "--no-progress"], src)  # fmt: skip
        rows[name] = measure(pred, demo / "dataset" / "instances")
    keys = list(rows["this"])
    print(f"{'':26s}" + "".join(f"{n:>12s}" for n in rows))
    for key in keys:
        cells = [rows[n].get(key) for n in rows]
        print(f"{key:26s}" + "".join(
            f"{c:12.4f}" if isinstance(c, float) else f"{c!s:>12s}" for c in cells))  # fmt: skip


if __name__ == "__main__":
    main()
