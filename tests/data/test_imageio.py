"""Exact image and mask I/O: modes, bit depths, EXIF orientation, errors."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unetkit.data.imageio import (
    decode_image,
    match_channels,
    read_image,
    read_mask,
)
from unetkit.data.writers import write_image, write_mask
from unetkit.errors import UnetkitError

RAW = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3) * 40  # asymmetric 2x3 pattern

# EXIF orientation -> what a viewer shows for stored pixels A (the EXIF 2.3 definitions):
# 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise,
# 7 transverse (transpose of the 180 rotation), 8 rotate 90 counter-clockwise.
EXIF_VIEW = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, 1),
}


def _png(array: np.ndarray, mode: str | None = None, exif: int | None = None) -> bytes:
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buf = io.BytesIO()
    kwargs = {}
    if exif is not None:
        data = Image.Exif()
        data[0x0112] = exif
        kwargs["exif"] = data.tobytes()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    path = tmp_path / "o.png"
    path.write_bytes(_png(RAW, exif=orientation))
    image = read_image(path)
    np.testing.assert_array_equal(image[:, :, 0], EXIF_VIEW[orientation](RAW))


def test_modes_and_channels(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    (tmp_path / "a.png").write_bytes(_png(rgba))
    image = read_image(tmp_path / "a.png")
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])  # alpha dropped, not blended
    grey = read_image(tmp_path / "a.png", channels=1)
    assert grey.shape == (2, 2, 1) and grey[0, 0, 0] == 76  # round(0.299 * 255)
    (tmp_path / "l.png").write_bytes(_png(RAW))
    assert read_image(tmp_path / "l.png").shape == (2, 3, 1)
    assert read_image(tmp_path / "l.png", channels=3)[1, 2].tolist() == [200, 200, 200]
    with pytest.raises(UnetkitError, match="4 channels, expected 3"):
        match_channels(np.zeros((2, 2, 4), np.uint8), 3, "x")


def test_sixteen_bit_round_trip(tmp_path):
    grey = np.array([[0, 1, 65535], [300, 4095, 12345]], np.uint16)
    write_image(tmp_path / "g.png", grey)
    back = read_image(tmp_path / "g.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, 0], grey)
    rgb = np.stack([grey, grey[::-1], 65535 - grey], axis=2)
    write_image(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), rgb)


def test_npy_stack_and_bad_arrays(tmp_path):
    stack = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    write_image(tmp_path / "s.npy", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "s.npy"), stack)
    with pytest.raises(UnetkitError, match="6 channels"):
        write_image(tmp_path / "s.png", (stack * 255).astype(np.uint8))
    assert not (tmp_path / "s.png").exists()


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UnetkitError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(UnetkitError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(UnetkitError, match="bad.png"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(UnetkitError, match="cam.jpg"):
        decode_image(b"garbage", name="cam.jpg")


def test_mask_modes_are_exact(tmp_path):
    values = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    p_img = Image.frombytes("P", (3, 2), values.tobytes())
    p_img.putpalette([200, 10, 10] * 256)  # colours unrelated to the indices
    p_img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), values)
    Image.fromarray(values).save(tmp_path / "l.png")
    assert read_mask(tmp_path / "l.png").dtype == np.int64
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png"), values)
    Image.fromarray(values > 1).save(tmp_path / "one.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "one.png"), (values > 1).astype(int))
    big = np.array([[0, 300], [65535, 2]], np.uint16)
    Image.fromarray(big).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "i16.png"), big.astype(np.int64))


def test_rgb_masks_need_a_colour_map(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = [128, 0, 0]
    rgb[1, 1] = [0, 128, 0]
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(UnetkitError, match="c.png: RGB colour mask"):
        read_mask(tmp_path / "c.png")
    cmap = [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png", colormap=cmap), [[1, 0], [0, 2]])
    as_dict = {(0, 0, 0): 0, (128, 0, 0): 5, (0, 128, 0): 9}
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png", colormap=as_dict), [[5, 0], [0, 9]])
    with pytest.raises(UnetkitError, match=r"\(0, 128, 0\)"):
        read_mask(tmp_path / "c.png", colormap=cmap[:2])
    Image.fromarray(np.repeat(rgb[:, :, :1], 3, axis=2)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png"), [[128, 0], [0, 0]])


def test_write_mask_palette_png(tmp_path):
    mask = np.array([[0, 1, 2], [255, 2, 0]])
    write_mask(tmp_path / "m.png", mask, [[0, 0, 0], [10, 20, 30], [40, 50, 60]])
    img = Image.open(tmp_path / "m.png")
    assert img.mode == "P"
    assert img.getpalette()[:9] == [0, 0, 0, 10, 20, 30, 40, 50, 60]
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    with pytest.raises(UnetkitError, match="0..255"):
        write_mask(tmp_path / "x.png", np.array([[256]]), [[0, 0, 0]])
    with pytest.raises(UnetkitError, match="0..255"):
        write_mask(tmp_path / "x.png", np.array([[-1]]), [[0, 0, 0]])
    with pytest.raises(UnetkitError, match="integers"):
        write_mask(tmp_path / "x.png", np.array([[0.5]]), [[0, 0, 0]])
    assert not (tmp_path / "x.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary files left


def test_opencv_says_nothing_on_the_terminal_about_a_corrupt_png(tmp_path):
    """16-bit colour PNGs are decoded by OpenCV, whose libpng prints to fd 2 by itself."""
    import cv2

    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 65535, (64, 64, 3), "u2"))
    data = bytearray(buf.tobytes())
    data[-40] ^= 0xFF  # inside the image data: a bad zlib check, found while decoding
    (tmp_path / "bad16.png").write_bytes(bytes(data))
    (tmp_path / "half16.png").write_bytes(buf.tobytes()[: len(buf) // 2])
    code = (
        "import sys; from unetkit.data.imageio import read_image\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        read_image(name)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
        "print('still writes to stderr', file=sys.stderr)\n"
    )
    names = [str(tmp_path / "bad16.png"), str(tmp_path / "half16.png")]
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "libpng" not in proc.stderr and "WARN" not in proc.stderr, proc.stderr
    assert proc.stderr == "still writes to stderr\n"  # fd 2 is given back afterwards
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "bad16.png" in lines[0] and "half16.png" in lines[1]


def test_write_mask_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way (a kill, a full disk) leaves the previous mask intact and no
    temporary file: it writes to a temporary name and renames (mutation: in place)."""
    from PIL import Image as PILImage

    from unetkit.data.imageio import read_mask

    path = tmp_path / "m.png"
    old = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    write_mask(path, old, [[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    before = path.read_bytes()

    def half_write(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PILImage.Image, "save", half_write)
    with pytest.raises((OSError, ValueError)):
        write_mask(path, np.zeros((3, 4), np.uint8), [[0, 0, 0]])
    assert path.read_bytes() == before
    np.testing.assert_array_equal(read_mask(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]
