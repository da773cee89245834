"""Reliability suite: corrupt, hostile and odd input files through every command.

``tests/corrupt.py`` generates the files: 74 images (41 refused, 33 read; one more refused
when not run as root: a chmod 000 file, which root can read) and 12 masks (11 refused).
Figures this file establishes, for the docs' Reliability page (docs/reliability.md)
(reproduce with ``.venv/bin/pytest -q tests/test_reliability_inputs.py``, about 20 s):

- 86 files tried: every image through ``predict`` (one run) and, as labelme ``imagePath`` and
  ``imageData``, through ``prepare``; every image and mask in a dataset through ``verify``;
  each bad one in a dataset of its own through ``evaluate`` (and 7 readable ones together); a
  dataset with one bad image or mask (10 kinds) through ``train``;
- each refused file: exactly one line naming it and saying why; exit 2; 0 tracebacks, 0 Python
  warnings; 0 partial outputs (no output of a refused image; no dataset, report or run
  folder); 0 temporary files left;
- each file that is read: its documented conversion (16-bit kept as uint16, alpha dropped,
  palette and transparency expanded to RGB, CMYK -> RGB, EXIF orientations 1-8 applied, also
  to 16-bit colour PNGs);
- 9 decompression bombs (PNG x4, declaring up to 2**40 pixels, TIFF, GIF, JPEG, ``.npy``, a
  mask): refused from the header, no decoder called; peak RSS of ``unetkit predict`` over all
  of them in a fresh process under 1 GiB (the interpreter and torch: about 0.4 GiB).

Bugs these tests found (each test failed before its fix in ``data/imageio.py``, ``verify.py``,
``labelme.py``, ``prepare.py``):

- bombs decoded: Pillow's DecompressionBombError fell back to OpenCV, which decoded them (a
  20000x20000 PNG: 1 GiB RSS; a JPEG declaring 20000x20000: 3.4 GiB, 10 s); 16-bit colour
  PNGs went to OpenCV with no size check (12000x12000: 2 GiB); 1e8-pixel images only warned;
  an ``.npy`` header could ask for any allocation (``test_bombs_are_refused_before_decoding``,
  ``test_bomb_rss``);
- 16-bit colour TIFFs silently read as 8 bits; the EXIF orientation of 16-bit colour PNGs
  ignored (``test_read_image_on_every_case``);
- NaN / infinite float images accepted; multi-page TIFFs and animated GIFs silently reduced to
  their first frame (now refused, except by ``predict``, which predicts every page of a TIFF
  stack: ``tests/test_stack.py``); palette transparency and corrupt EXIF printed Python
  warnings; messages showed ``<_io.BytesIO object at 0x...>`` (``test_read_image_on_every_case``,
  ``test_predict_reports_each_bad_file_once_and_writes_only_good_ones``);
- JPEG masks were read (lossy class indices) everywhere but ``verify``
  (``test_read_mask_on_every_case``);
- ``prepare``: a float image failed at write time naming a temporary path; an unreadable
  image raised a bare OSError; a symlink loop as ``imagePath`` crashed
  (``test_prepare_refuses_a_float_image_in_one_line``, ``test_prepare_names_...``).

Mutations each guard kills (tried on a copy of ``src``, not in place):

- the size check in ``open_image`` removed -> ``test_bombs_are_refused_before_decoding``,
  ``test_read_image_on_every_case``;
- ``check_finite`` disabled -> ``test_read_image_on_every_case``, ``test_predict_...``;
- the frame check removed -> ``test_read_image_on_every_case``;
- ``_needs_cv2`` always False (16-bit colour through Pillow) -> ``test_read_image_...``;
- the EXIF transform not applied on the OpenCV path -> ``test_read_image_on_every_case``;
- the JPEG-mask refusal removed -> ``test_read_mask_on_every_case``, ``test_verify_...``.

Also fixed, in infer/inputs.py and infer/evaluate.py: a symlink loop in a prediction folder
stopped the whole run (``test_predict_folder_with_a_symlink_loop``); ``evaluate_model`` left
mask values outside the classes out of every metric
(``test_evaluate_refuses_mask_values_outside_the_classes``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PEAK_RSS
from unetkit import save_checkpoint
from unetkit.cli import main
from unetkit.data.decoders import _ORIENT as ORIENT
from unetkit.data.imageio import read_image, read_mask
from unetkit.errors import UnetkitError

try:  # tests/ as a package or as a plain folder on sys.path
    from .corrupt import BOMB, SIZE, Case, encode, make_images, make_masks, pattern
    from .corrupt import run_cli as _run
except ImportError:
    from corrupt import BOMB, SIZE, Case, encode, make_images, make_masks, pattern
    from corrupt import run_cli as _run

CLASSES = ["background", "cell", "nucleus"]
GIB = 1 << 30
OUT_OF_CLASS = ["m_values.png", "m_sixteen.png"]  # mask values 7 and 1000 in a 3-class set
EVALUATE_READS = ("exif6.jpg", "grey16.png", "rgb16_tif.tif", "cmyk.jpg", "la.png", "stack.npy")
PREDICT_STACKS = {"multiframe.tif": 3}  # refused, but predict reads it as a TIFF stack (pages)
PREPARE_REFUSES = {"float.tif": "float32", "stack.npy": "float32"}  # readable, not as PNG


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    """Every generated image case, in one folder (read-only for the tests)."""
    folder = tmp_path_factory.mktemp("corrupt") / "images"
    return folder, make_images(folder)


@pytest.fixture(scope="session")
def mask_corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    folder = tmp_path_factory.mktemp("corrupt_masks") / "masks"
    return folder, make_masks(folder, SIZE)


@pytest.fixture(scope="session")
def checkpoint_file(tmp_path_factory, tiny_checkpoint) -> Path:
    """An untrained 3-class RGB U-Net (7 k parameters), enough to run every command."""
    return save_checkpoint(tiny_checkpoint(), tmp_path_factory.mktemp("tiny") / "tiny.pt")


def _good_mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[: max(shape[0] // 2, 1), : max(shape[1] // 2, 1)] = 1
    return mask


def _no_traceback(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert "Traceback" not in text and "Warning:" not in text, text[-2000:]


def _lines_naming(lines: list[str], needle: str) -> list[str]:
    return [line for line in lines if needle in line]


def _why(case: Case, line: str, *names: str) -> None:
    """The line says why, in words (the file names themselves do not count)."""
    for name in names:
        line = line.replace(name, "")
    assert re.search(case.why, line, re.I), f"{case.name}: {line!r} does not match {case.why!r}"


def _hidden(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob(".*")) if folder.exists() else []


def _real_file(case: Case, folder: Path) -> bool:
    path = folder / case.name
    return path.is_file() and not path.is_symlink()


# -- the reader ----------------------------------------------------------------------------------
def test_read_image_on_every_case(corpus):
    """read_image refuses (one line, naming the file, saying why) or reads as documented."""
    folder, cases = corpus
    assert len(cases) >= 60
    for case in cases:
        path = folder / case.name
        if case.expect == "refuse":
            with pytest.raises(UnetkitError) as info:
                read_image(path)
            message = str(info.value)
            assert "\n" not in message and str(path) in message, message
            _why(case, message, str(path))
            assert not re.search(r"object at 0x[0-9a-f]+", message), message  # no repr noise
        else:
            image = read_image(path)
            assert image.shape[:2] == case.shape, (case.name, image.shape)
            assert image.dtype in (np.uint8, np.uint16, np.float32), case.name
    # Pillow's exif_transpose reads the JPEGs (test_imageio checks it against EXIF 2.3); the
    # 16-bit colour reader turns by its own table, which must agree with it for all eight
    stored = read_image(folder / "exif1.jpg")
    assert sorted(ORIENT) == list(range(1, 9))
    for k, view in ORIENT.items():
        np.testing.assert_array_equal(read_image(folder / f"exif{k}.jpg"), view(stored), k)
    rgb16 = pattern().astype(np.uint16) * 257
    for name in ("rgb16.png", "rgb16_tif.tif", "rgba16.tif"):
        image = read_image(folder / name)
        assert image.dtype == np.uint16, name  # not silently reduced to 8 bits
        np.testing.assert_array_equal(image, rgb16)
    np.testing.assert_array_equal(read_image(folder / "rgb16_exif6.png"), np.rot90(rgb16, -1))
    np.testing.assert_array_equal(read_image(folder / "rgba.png"), pattern())  # alpha dropped
    assert read_image(folder / "grey16.png").dtype == np.uint16


def test_bombs_are_refused_before_decoding(corpus, mask_corpus, monkeypatch):
    """No decoder runs for a bomb: the size comes from the header and is refused first."""
    import cv2

    folder, cases = corpus
    bombs = [c for c in cases if c.bomb]
    assert len(bombs) >= 8

    ran: list[str] = []

    def decoder(name: str):
        def run(*args, **kwargs):
            ran.append(name)
            raise MemoryError  # what a real bomb ends in, at best

        return run

    monkeypatch.setattr(Image.Image, "load", decoder("PIL"))
    monkeypatch.setattr(cv2, "imdecode", decoder("OpenCV"))
    monkeypatch.setattr(np, "load", decoder("numpy"))
    mask_folder, _ = mask_corpus
    reads = [(read_image, folder / c.name) for c in bombs]
    for read, path in [*reads, (read_mask, mask_folder / "m_bomb.png")]:
        with pytest.raises(UnetkitError) as info:
            read(path)
        assert re.search(BOMB, str(info.value)) and "refused before decoding" in str(info.value)
        assert ran == [], f"{path.name}: {ran} decoded it"


def test_read_mask_on_every_case(mask_corpus):
    folder, cases = mask_corpus
    refused = 0
    for case in cases:
        path = folder / case.name
        try:
            mask = read_mask(path)
        except UnetkitError as exc:
            refused += 1
            assert str(path) in str(exc) and "\n" not in str(exc)
            _why(case, str(exc), str(path))
            continue
        assert mask.dtype == np.int64
    assert refused >= 7  # size and value problems need the image or the class list


# -- predict -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_reports_each_bad_file_once_and_writes_only_good_ones(
    corpus, checkpoint_file, tmp_path, capsys, caplog
):
    source, cases = corpus
    folder = tmp_path / "images"  # the symlink loop: see test_predict_folder_with_a_symlink_loop
    shutil.copytree(source, folder, symlinks=True, ignore=shutil.ignore_patterns("loop_*"))
    cases = [c for c in cases if not c.name.startswith("loop_")]
    out = tmp_path / "out"
    gifs = [str(folder / c.name) for c in cases if c.name.endswith(".gif")]  # named: no glob
    inputs = [str(folder), str(folder / "*.npy"), *gifs]
    code, lines = _run(
        ["predict", str(checkpoint_file), *inputs, "-o", str(out), "--no-progress"],
        capsys,
        caplog,
    )
    assert code == 2
    _no_traceback(lines)
    for case in cases:
        path = str(folder / case.name)
        named = _lines_naming(lines, path)
        made = [f"{case.stem}{tag}" for tag in (".png", "_color.png", "_overlay.png")]
        outputs = [name for name in made if (out / name).exists()]
        if case.name in PREDICT_STACKS:  # refused by every other command
            assert named == [] and outputs == [], (case.name, named, outputs)
            assert (out / case.name).is_file() and (out / f"{case.stem}_preview.png").is_file()
        elif case.expect == "refuse":
            assert len(named) == 1, (case.name, named, lines)
            _why(case, named[0], path)
            assert outputs == [], (case.name, outputs)  # nothing half-written
        else:
            assert named == [], (case.name, named)
            assert outputs == made, case.name
            assert read_mask(out / f"{case.stem}.png").shape == case.shape, case.name
    summary = (out / "summary.csv").read_text().splitlines()[1:]
    planes = [f"{n}[plane={i}]" for n, count in PREDICT_STACKS.items() for i in range(count)]
    assert sorted(r.split(",")[0] for r in summary) == sorted(
        [c.name for c in cases if c.expect == "read"] + planes
    )
    assert _hidden(out) == []


def test_predict_named_odd_paths_exit_2_in_one_line(corpus, checkpoint_file, tmp_path, capsys):
    """A folder named x.png, a symlink loop, a dangling link given by name: one line each."""
    folder, _ = corpus
    for name in ("folder.png", "loop_a.png", "dangling.png", "missing.png"):
        out = tmp_path / name
        code = main(["predict", str(checkpoint_file), str(folder / name), "-o", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and name in err, (name, err)
        assert not out.exists()


def test_predict_folder_with_a_symlink_loop(corpus, checkpoint_file, tmp_path, capsys, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(corpus[0] / "image.bmp", folder / "good.png")
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    out = tmp_path / "out"
    argv = ["predict", str(checkpoint_file), str(folder), "-o", str(out), "--no-progress"]
    code, lines = _run(argv, capsys, caplog)
    _no_traceback(lines)
    assert code == 2 and (out / "good.png").is_file()
    for name in ("loop_a.png", "loop_b.png"):
        named = _lines_naming(lines, str(folder / name))
        assert len(named) == 1 and re.search("symbolic links|loop", named[0]), (name, lines)


@pytest.mark.slow
def test_bomb_rss(corpus, mask_corpus, checkpoint_file, tmp_path):
    """``unetkit predict`` over every bomb in a fresh process: refused, peak RSS < 1 GiB."""
    folder, cases = corpus
    bombs = [str(folder / c.name) for c in cases if c.bomb]
    out = tmp_path / "out"
    script = textwrap.dedent(
        """
        import sys
        from unetkit.cli import main
        code = main(sys.argv[1:])
        {peak_rss}
        print(f"exit={code} peak_rss={peak}", file=sys.stderr)
        """
    ).replace("{peak_rss}", PEAK_RSS)
    argv = ["predict", str(checkpoint_file), *bombs, "-o", str(out), "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120
    )
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-3000:]
    found = re.search(r"exit=(\d+) peak_rss=(\d+)", text)
    assert found, text[-3000:]
    code, peak = int(found.group(1)), int(found.group(2))
    assert code == 2
    assert peak < GIB, f"peak RSS {peak / GIB:.2f} GiB"
    for path in bombs:
        named = _lines_naming(text.splitlines(), path)
        assert len(named) == 1 and re.search(BOMB, named[0]), (path, named)
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]


# -- verify --------------------------------------------------------------------------------------
def _dataset(root: Path, images: list[tuple[str, Path | bytes, np.ndarray]]) -> Path:
    """images/ + masks/ + classes.txt; each entry (image name, source file or bytes, mask)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for name, source, mask in images:
        target = root / "images" / name
        if isinstance(source, Path):
            shutil.copyfile(source, target)
        else:
            target.write_bytes(source)
        Image.fromarray(mask).save(root / "masks" / f"{Path(name).stem}.png")
    return root


def _dataset_cases(folder: Path, cases: list[Case]) -> list[Case]:
    """Cases that a dataset folder can hold (regular files of a dataset image format)."""
    return [c for c in cases if _real_file(c, folder) and not c.name.endswith(".gif")]


def test_verify_names_every_bad_image_and_mask(corpus, mask_corpus, tmp_path, capsys, caplog):
    folder, cases = corpus
    mask_folder, mask_cases = mask_corpus
    usable = _dataset_cases(folder, cases)
    entries = [(c.name, folder / c.name, _good_mask(c.shape or SIZE)) for c in usable]
    root = _dataset(tmp_path / "ds", entries)
    for case in mask_cases:
        image = encode(pattern(), "PNG")
        (root / "images" / f"{case.stem}.png").write_bytes(image)
        shutil.copyfile(mask_folder / case.name, root / "masks" / case.name)
    code, lines = _run(["verify", str(root)], capsys, caplog)
    assert code == 2
    _no_traceback(lines)
    errors = [line for line in lines if line.startswith("error:")]
    for case in usable + mask_cases:
        named = [line for line in errors if re.search(rf"[ :,]{re.escape(case.name)}[:,]", line)]
        if case.expect == "refuse":
            assert len(named) == 1, (case.name, named)
            _why(case, named[0])
        else:
            assert named == [], (case.name, named)
    assert _hidden(root) == []


# -- prepare -------------------------------------------------------------------------------------
def _labelme_doc(image_path: str | None, shape: tuple[int, int], data: bytes | None) -> dict:
    import base64

    h, w = shape
    return {
        "version": "5.4.1",
        "flags": {},
        "shapes": [
            {
                "label": "cell",
                "points": [[0, 0], [max(w // 2, 1), max(h // 2, 1)]],
                "shape_type": "rectangle",
            }
        ],
        "imagePath": image_path,
        "imageData": base64.b64encode(data).decode() if data is not None else None,
        "imageHeight": h,
        "imageWidth": w,
    }


def _embeddable(case: Case, folder: Path) -> bool:
    """An image file whose bytes can be imageData (empty imageData means none, as in
    labelme; ``.npy`` arrays are not image files)."""
    path = folder / case.name
    return _real_file(case, folder) and path.stat().st_size > 0 and path.suffix != ".npy"


def test_prepare_names_every_bad_image_and_writes_nothing(corpus, tmp_path, capsys, caplog):
    """labelme JSONs pointing at every case (imagePath) and embedding it (imageData)."""
    folder, cases = corpus
    lm = tmp_path / "lm"
    shutil.copytree(folder, lm / "img", symlinks=True)
    for case in cases:
        doc = _labelme_doc(f"img/{case.name}", case.shape or SIZE, None)
        (lm / f"{case.stem}.json").write_text(json.dumps(doc))
        if _embeddable(case, folder):
            data = (folder / case.name).read_bytes()
            doc = _labelme_doc(None, case.shape or SIZE, data)
            (lm / f"{case.stem}__data.json").write_text(json.dumps(doc))
    out = tmp_path / "ds"
    code, lines = _run(["prepare", str(lm), str(out)], capsys, caplog)
    assert code == 2
    _no_traceback(lines)
    assert not out.exists() and _hidden(tmp_path) == []
    for case in cases:
        by_path = _lines_naming(lines, f"{lm}/img/{case.name}")
        by_json = _lines_naming(lines, f"{lm}/{case.stem}.json")
        embedded = _lines_naming(lines, f"{lm}/{case.stem}__data.json")
        if case.name in PREPARE_REFUSES:
            assert len(by_json) == 1 and PREPARE_REFUSES[case.name] in by_json[0], by_json
        elif case.expect == "refuse":
            named = by_path + [line for line in by_json if line not in by_path]
            assert len(named) == 1, (case.name, named)
            _why(case, named[0], f"{lm}/img/{case.name}", f"{lm}/{case.stem}.json")
            if _embeddable(case, folder):
                assert len(embedded) == 1, (case.name, embedded)
                _why(case, embedded[0], f"{lm}/{case.stem}__data.json")
        else:
            assert by_path == by_json == embedded == [], case.name


def test_prepare_converts_the_readable_cases(corpus, tmp_path, capsys, caplog):
    """The readable cases make a dataset (EXIF applied, 16-bit kept) that verify accepts."""
    folder, cases = corpus
    lm = tmp_path / "lm"
    (lm / "img").mkdir(parents=True)
    readable = [c for c in cases if c.expect == "read" and c.name not in PREPARE_REFUSES]
    for case in readable:
        shutil.copyfile(folder / case.name, lm / "img" / case.name)
        doc = _labelme_doc(f"img/{case.name}", case.shape, None)
        (lm / f"{case.stem}.json").write_text(json.dumps(doc))
    out = tmp_path / "ds"
    code, lines = _run(["prepare", str(lm), str(out), "--val-fraction", "0"], capsys, caplog)
    assert code == 0, lines
    _no_traceback(lines)
    for case in readable:
        assert read_image(out / "images" / f"{case.stem}.png").shape[:2] == case.shape
    assert read_image(out / "images" / "grey16.png").dtype == np.uint16
    code, lines = _run(["verify", str(out)], capsys, caplog)
    assert code == 0, lines


def test_prepare_refuses_a_float_image_in_one_line(corpus, tmp_path, capsys, caplog):
    folder, _ = corpus
    lm = tmp_path / "lm"
    lm.mkdir()
    shutil.copyfile(folder / "float.tif", lm / "float.tif")
    (lm / "float.json").write_text(json.dumps(_labelme_doc("float.tif", SIZE, None)))
    code, lines = _run(["prepare", str(lm), str(tmp_path / "ds")], capsys, caplog)
    assert code == 2 and not (tmp_path / "ds").exists() and _hidden(tmp_path) == []
    named = _lines_naming(lines, str(lm / "float"))
    assert len(named) == 1 and str(lm / "float.json") in named[0], lines  # not a temp path
    assert "float32" in named[0] and ".ds." not in named[0]
    _no_traceback(lines)


# -- evaluate ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_refuses_each_bad_file_in_one_line(
    corpus, mask_corpus, checkpoint_file, tmp_path, capsys, caplog
):
    """Every bad file in a dataset of its own (with a good pair): exit 2 naming it, no report;
    the readable cases all together: scored."""
    folder, cases = corpus
    mask_folder, mask_cases = mask_corpus
    good = ("zz_good.png", encode(pattern(seed=5), "PNG"), _good_mask(SIZE))  # read last
    usable = _dataset_cases(folder, cases)
    tried = 0
    refused = [c for c in usable + mask_cases if c.expect == "refuse"]
    for case in [c for c in refused if c.name not in OUT_OF_CLASS]:  # see the test below
        root = tmp_path / case.stem
        image = (f"{case.stem}.png", encode(pattern(), "PNG"), _good_mask(SIZE))
        if case in mask_cases:
            _dataset(root, [good, image])
            (root / "masks" / f"{case.stem}.png").unlink()
            shutil.copyfile(mask_folder / case.name, root / "masks" / case.name)
        else:
            _dataset(root, [good, (case.name, folder / case.name, _good_mask(SIZE))])
        report = tmp_path / f"{case.stem}_report"
        argv = ["evaluate", str(checkpoint_file), str(root), "-o", str(report), "--no-progress"]
        code, lines = _run([*argv, "--split", "all"], capsys, caplog)
        _no_traceback(lines)
        named = [line for line in lines if case.name in line and line.startswith("error:")]
        assert code == 2 and len(named) == 1, (case.name, code, lines)
        _why(case, named[0], str(root / "images" / case.name), str(root / "masks" / case.name))
        assert not report.exists(), case.name  # no half-written report
        tried += 1
    readable = [c for c in usable if c.name in EVALUATE_READS]  # predict reads all of them
    root = _dataset(
        tmp_path / "readable", [(c.name, folder / c.name, _good_mask(c.shape)) for c in readable]
    )
    for case in [c for c in mask_cases if c.expect == "read"]:
        readable.append(case)
        (root / "images" / f"{case.stem}.png").write_bytes(encode(pattern(), "PNG"))
        shutil.copyfile(mask_folder / case.name, root / "masks" / case.name)
    report = tmp_path / "readable_report"
    argv = ["evaluate", str(checkpoint_file), str(root), "-o", str(report), "--no-progress"]
    code, lines = _run([*argv, "--split", "all"], capsys, caplog)
    assert code == 0, lines
    _no_traceback(lines)
    assert json.loads((report / "metrics.json").read_text())["images"] == len(readable)
    assert _hidden(tmp_path) == []
    assert tried >= 40 and len(readable) == len(EVALUATE_READS) + 1


@pytest.mark.parametrize("name", OUT_OF_CLASS)
def test_evaluate_refuses_mask_values_outside_the_classes(
    name, mask_corpus, checkpoint_file, tmp_path, capsys, caplog
):
    mask_folder, _ = mask_corpus
    root = _dataset(tmp_path / "ds", [("a.png", encode(pattern(), "PNG"), _good_mask(SIZE))])
    shutil.copyfile(mask_folder / name, root / "masks" / "a.png")
    report = tmp_path / "report"
    argv = ["evaluate", str(checkpoint_file), str(root), "-o", str(report), "--no-progress"]
    code, lines = _run([*argv, "--split", "all"], capsys, caplog)
    named = [line for line in lines if "a.png" in line and line.startswith("error:")]
    assert code == 2 and len(named) == 1 and not report.exists(), lines


def test_evaluate_dirs_refuses_bad_masks(mask_corpus, tmp_path, capsys, caplog):
    """``evaluate PRED_DIR GT_DIR`` with each bad ground-truth mask: exit 2 naming it."""
    mask_folder, mask_cases = mask_corpus
    for case in mask_cases:
        if case.expect != "refuse" or "size" in case.why or "class" in case.why:
            continue  # sizes and values are checked against the prediction below
        pred, gt = tmp_path / case.stem / "pred", tmp_path / case.stem / "gt"
        pred.mkdir(parents=True)
        gt.mkdir()
        Image.fromarray(_good_mask(SIZE)).save(pred / f"{case.stem}.png")
        shutil.copyfile(mask_folder / case.name, gt / case.name)
        if Path(case.name).suffix not in (".png", ".tif", ".tiff", ".bmp"):
            continue  # not a mask format for evaluate: not paired at all
        report = tmp_path / case.stem / "report"
        argv = ["compare", str(pred), str(gt), "-o", str(report), "--num-classes", "3"]
        code, lines = _run(argv, capsys, caplog)
        _no_traceback(lines)
        named = [line for line in lines if case.name in line]
        assert code == 2 and len(named) == 1, (case.name, lines)
        assert not report.exists()


# -- train ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    ["trunc50_png.png", "bomb.png", "float_nan.tif", "multiframe.tif", "empty.png"]
    + ["m_values.png", "m_small.png", "m_jpeg.jpg", "m_colour.png", "m_trunc.png"],
)
def test_train_refuses_a_bad_file_before_the_run_folder(
    bad, corpus, mask_corpus, tmp_path, capsys, caplog
):
    folder, _ = corpus
    mask_folder, _ = mask_corpus
    entries = [(f"ok{i}.png", encode(pattern(seed=i), "PNG"), _good_mask(SIZE)) for i in range(3)]
    if bad.startswith("m_"):
        entries.append((f"{Path(bad).stem}.png", encode(pattern(seed=9), "PNG"), _good_mask(SIZE)))
        root = _dataset(tmp_path / "ds", entries)
        (root / "masks" / f"{Path(bad).stem}.png").unlink()
        shutil.copyfile(mask_folder / bad, root / "masks" / bad)
    else:
        entries.append((bad, folder / bad, _good_mask(SIZE)))
        root = _dataset(tmp_path / "ds", entries)
    run = tmp_path / "run"
    argv = ["train", str(root), "-o", str(run), "--epochs", "1", "--base-width", "4"]
    argv += ["--depth", "2", "--patch-size", "16", "--batch-size", "2", "--device", "cpu"]
    argv += ["--val-fraction", "0.25"]
    code, lines = _run(argv, capsys, caplog)
    _no_traceback(lines)
    named = [line for line in lines if bad in line]
    assert code == 2 and len(named) == 1, (bad, code, lines[-10:])
    assert not run.exists() and _hidden(tmp_path) == []
