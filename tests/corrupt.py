"""Generators of corrupt, hostile and odd image and mask files for the reliability suite.

``make_images(folder)`` writes every image case into ``folder`` and returns them as ``Case``
records: ``refuse`` cases must be reported in one line naming the file and matching ``why``;
``read`` cases must be read (after the documented conversion in ``why``: 16-bit kept as uint16,
alpha dropped, palette expanded, CMYK -> RGB, EXIF orientation applied) with ``shape`` (H, W).
``make_masks(folder, size)`` does the same for masks of an image of ``size``; ``run_cli`` runs
``unetkit`` in-process for the suite's tests.

The files are small: a decompression bomb declares a huge size in its header and carries little
(the PNG ones are real bombs: valid zlib streams of zeros that inflate to the declared size).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (24, 40)  # (height, width) of the ordinary images: small, not square
EXIF_ORIENTATION = 0x0112
BOMB = "exceeds|pixels|too large|bomb"  # what a refused bomb's message must say


@dataclass(frozen=True)
class Case:
    """One generated file: ``expect`` is ``refuse`` or ``read``; ``why`` a regex of the reason
    (refused) or the conversion (read); ``shape`` the (H, W) a ``read`` case gives."""

    name: str
    expect: str
    why: str
    shape: tuple[int, int] | None = None
    bomb: bool = False

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def pattern(size: tuple[int, int] = SIZE, channels: int = 3, seed: int = 0) -> np.ndarray:
    """An asymmetric uint8 (H, W, C) picture: a bright block in the top-left corner, noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (*size, channels), dtype=np.uint8)
    image[: size[0] // 3, : size[1] // 4] = 230
    return image


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **params) -> bytes:
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif.tobytes()


# -- PNG by hand ---------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, idat: bytes, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG with an IHDR of any declared size (0 included) and the given compressed data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def zero_stream(n_bytes: int, chunk: int = 1 << 20) -> bytes:
    """A valid zlib stream of ``n_bytes`` zeros, built in milliseconds (repeated flush blocks)."""
    block = b"\0" * chunk
    c = zlib.compressobj(9)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)  # identical after a full flush
    count, rest = divmod(n_bytes, chunk)
    tail = zlib.compressobj(9)
    tail_bytes = tail.compress(b"\0" * rest) + tail.flush(zlib.Z_FULL_FLUSH) if rest else b""
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(b"\0" * rest, adler)
    body = first + again * (count - 1) if count else b"\x78\xda"
    if rest:
        body += tail_bytes[2:]
    return body + b"\x03\x00" + struct.pack(">I", adler)  # empty final block, checksum


def png_bomb(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A real PNG bomb: the declared size, all zeros, a few hundred KB on disk."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = 1 + width * channels * depth // 8
    return png_file(width, height, zero_stream(row * height), depth, colour)


def with_png_exif(data: bytes, orientation: int) -> bytes:
    """Insert an ``eXIf`` chunk (orientation) after IHDR of an encoded PNG."""
    raw = _exif(orientation)
    raw = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    return data[:33] + png_chunk(b"eXIf", raw) + data[33:]


# -- other formats by hand -----------------------------------------------------------------------
def tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian greyscale TIFF declaring ``width`` x ``height`` with one tiny strip."""
    entries = [
        (256, 4, 1, width),  # ImageWidth LONG
        (257, 4, 1, height),  # ImageLength LONG
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 1),  # Photometric BlackIsZero
        (273, 4, 1, 0),  # StripOffsets (patched below)
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, width * height),  # StripByteCounts (a lie: the file is tiny)
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = ifd_offset + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0) + b"\0" * 64
    return bytes(out)


def gif_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF whose logical screen and single frame declare ``width`` x ``height``."""
    gif = encode(np.zeros((2, 2), np.uint8), "GIF")
    # logical screen size at bytes 6..10; the image descriptor (0x2C) holds the frame size
    gif = gif[:6] + struct.pack("<HH", width, height) + gif[10:]
    at = gif.index(b"\x2c", 13)
    return gif[: at + 5] + struct.pack("<HH", width, height) + gif[at + 9 :]


def jpeg_resized_header(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose SOF0 declares ``width`` x ``height`` (the scan data stays tiny)."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def npy_header_only(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """An ``.npy`` header declaring ``shape`` with (almost) no data after it."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16


# -- the image cases -----------------------------------------------------------------------------
def make_images(folder: Path) -> list[Case]:
    """Write every image case into ``folder``; returns the cases (names are unique stems)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = SIZE
    rgb = pattern()
    grey = pattern(channels=1)[:, :, 0]
    png, jpg, tif = encode(rgb, "PNG"), encode(rgb, "JPEG", quality=90), encode(rgb, "TIFF")
    cases: list[Case] = []

    def add(name: str, data: bytes, expect: str, why: str, shape=None, bomb=False) -> None:
        (folder / name).write_bytes(data)
        cases.append(Case(name, expect, why, shape, bomb))

    unreadable = "not an image|cannot (read|identify|decode)|truncated|broken|corrupt"
    # empty, truncated, random, text
    add("empty.png", b"", "refuse", "empty")
    add("empty_jpg.jpg", b"", "refuse", "empty")
    for fraction in (10, 50, 90):
        for fmt, data in (("png", png), ("jpg", jpg), ("tif", tif)):
            cut = data[: len(data) * fraction // 100]
            add(f"trunc{fraction}_{fmt}.{fmt}", cut, "refuse", unreadable)
    rng = np.random.default_rng(1)
    add("random.png", rng.bytes(4096), "refuse", unreadable)
    add("random_jpg.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(4096), "refuse", unreadable)
    add("random_tif.tif", b"II*\x00" + rng.bytes(4096), "refuse", unreadable)
    add("text.png", b"this is a text file, not a picture\n" * 20, "refuse", unreadable)
    add("html.jpg", b"<html><body>404 not found</body></html>\n", "refuse", unreadable)
    add("bad_crc.png", png[:29] + bytes([png[29] ^ 0xFF]) + png[30:], "refuse", unreadable)
    # degenerate sizes
    add("one_by_one.png", encode(np.array([[[200, 10, 10]]], np.uint8), "PNG"), "read", "", (1, 1))
    add("one_by_one_grey.jpg", encode(np.array([[90]], np.uint8), "JPEG"), "read", "", (1, 1))
    add("strip.png", encode(pattern((1, 300)), "PNG"), "read", "", (1, 300))
    zero_idat = zlib.compress(b"\0" * 8)
    add("zero_width.png", png_file(0, 16, zero_idat), "refuse", "0x16|16x0|size|empty|zero")
    add("zero_height.png", png_file(16, 0, zero_idat), "refuse", "0x16|16x0|size|empty|zero")
    add("zero_width_tif.tif", tiff_header_only(0, 16), "refuse", "empty|zero|cannot be read")
    # decompression bombs: refused from the header, before any pixel is decoded
    add("bomb.png", png_bomb(20000, 20000), "refuse", BOMB, bomb=True)
    add("bomb_warn_zone.png", png_bomb(10000, 10000), "refuse", BOMB, bomb=True)  # 100 M px
    add("bomb_rgb16.png", png_bomb(12000, 12000, depth=16, colour=2), "refuse", BOMB, bomb=True)
    add("bomb_declared.png", png_file(1 << 20, 1 << 20, zero_idat), "refuse", BOMB, bomb=True)
    add("bomb_tif.tif", tiff_header_only(30000, 30000), "refuse", BOMB, bomb=True)
    add("bomb_gif.gif", gif_bomb(), "refuse", BOMB, bomb=True)
    add("bomb_jpg.jpg", jpeg_resized_header(jpg, 20000, 20000), "refuse", BOMB, bomb=True)
    add("bomb_npy.npy", npy_header_only((100000, 100000)), "refuse", BOMB, bomb=True)
    # colour models and bit depths (documented conversions)
    add("cmyk.jpg", encode(rgb, "JPEG", mode="CMYK"), "read", "CMYK -> RGB", SIZE)
    grey16 = (grey.astype(np.uint16) * 257)[:, :]
    add("grey16.png", encode(grey16, "PNG"), "read", "16-bit kept", SIZE)
    add("grey16_tif.tif", encode(grey16, "TIFF"), "read", "16-bit kept", SIZE)
    import cv2

    rgb16 = rgb.astype(np.uint16) * 257
    png16 = cv2.imencode(".png", rgb16[:, :, ::-1])[1].tobytes()
    add("rgb16.png", png16, "read", "16-bit", SIZE)
    tif16 = cv2.imencode(".tif", rgb16[:, :, ::-1])[1].tobytes()
    add("rgb16_tif.tif", tif16, "read", "16-bit", SIZE)
    add("rgb16_exif6.png", with_png_exif(png16, 6), "read", "EXIF applied", (w, h))
    floats = grey.astype(np.float32) / 255
    add("float.tif", encode(floats, "TIFF"), "read", "float kept", SIZE)
    nan = floats.copy()
    nan[3, 5] = np.nan
    add("float_nan.tif", encode(nan, "TIFF"), "refuse", "NaN")
    inf = floats.copy()
    inf[0, 0] = np.inf
    add("float_inf.tif", encode(inf, "TIFF"), "refuse", "NaN|infinite")
    int32 = (grey.astype(np.int32) * 1000)[:, :]
    add("int32_big.tif", encode(int32, "TIFF"), "refuse", "outside 0..65535")
    add("int32_small.tif", encode(grey.astype(np.int32), "TIFF"), "read", "as uint16", SIZE)
    rgba16 = np.concatenate([rgb16, np.full((h, w, 1), 9999, np.uint16)], axis=2)
    tif16a = cv2.imencode(".tif", rgba16[:, :, [2, 1, 0, 3]])[1].tobytes()  # BGRA for OpenCV
    add("rgba16.tif", tif16a, "read", "alpha dropped", SIZE)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 100, np.uint8)], axis=2)
    add("rgba.png", encode(rgba, "PNG"), "read", "alpha dropped", SIZE)
    add("la.png", encode(rgba, "PNG", mode="LA"), "read", "alpha dropped", SIZE)
    add("bilevel.png", encode(grey > 30, "PNG"), "read", "1-bit", SIZE)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    add("palette.png", buf.getvalue(), "read", "palette expanded", SIZE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    add("palette_trns.png", buf.getvalue(), "read", "transparency dropped", SIZE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=bytes(range(0, 256, 16)))
    add("palette_alpha.png", buf.getvalue(), "read", "transparency dropped", SIZE)
    buf = io.BytesIO()
    frames = [Image.fromarray(pattern(seed=s)) for s in range(3)]
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    add("multiframe.tif", buf.getvalue(), "refuse", "3 frames")
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    add("animated.gif", buf.getvalue(), "refuse", "3 frames")
    add("still.gif", encode(rgb, "GIF"), "read", "palette expanded", SIZE)
    add("image.bmp", encode(rgb, "BMP"), "read", "", SIZE)
    add("image_webp.webp", encode(rgb, "WEBP", lossless=True), "read", "", SIZE)
    add("jpeg_named.png", jpg, "read", "content decides", SIZE)
    for orientation in range(1, 9):
        shape = SIZE if orientation < 5 else (w, h)
        data = encode(rgb, "JPEG", quality=90, exif=_exif(orientation))
        add(f"exif{orientation}.jpg", data, "read", "EXIF applied", shape)
    add("exif6_png.png", with_png_exif(png, 6), "read", "EXIF applied", (w, h))
    add("exif_bad.jpg", encode(rgb, "JPEG", exif=_exif(9)), "read", "orientation 9 ignored", SIZE)
    # arrays
    buf = io.BytesIO()
    np.save(buf, pattern().astype(np.float32) / 255)
    add("stack.npy", buf.getvalue(), "read", "float kept", SIZE)
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3, 4, 5), np.float32))
    add("four_d.npy", buf.getvalue(), "refuse", r"\(H, W\)")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    add("pickled.npy", buf.getvalue(), "refuse", "pickle|object|cannot read")
    nan_stack = pattern().astype(np.float32) / 255
    nan_stack[1, 1, 1] = np.nan
    buf = io.BytesIO()
    np.save(buf, nan_stack)
    add("nan_stack.npy", buf.getvalue(), "refuse", "NaN")
    add("trunc_stack.npy", buf.getvalue()[:200], "refuse", "cannot read|truncated|bytes")
    # file-system oddities
    (folder / "folder.png").mkdir()
    cases.append(Case("folder.png", "refuse", "folder|directory"))
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    cases.append(Case("loop_a.png", "refuse", "symbolic links|loop"))
    cases.append(Case("loop_b.png", "refuse", "symbolic links|loop"))
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    cases.append(Case("dangling.png", "refuse", "no such file|not found|dangling"))
    if os.geteuid() != 0:  # root reads any file: the case cannot be made
        (folder / "unreadable.png").write_bytes(png)
        (folder / "unreadable.png").chmod(0)
        cases.append(Case("unreadable.png", "refuse", "ermission"))
    names = [c.stem for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"case stems must be unique (outputs are by stem): {dupes}"
    return cases


# -- mask cases ----------------------------------------------------------------------------------
def make_masks(folder: Path, size: tuple[int, int], n_classes: int = 3) -> list[Case]:
    """Bad or odd masks for images of ``size`` in a dataset with ``n_classes`` classes."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    good = np.zeros(size, np.uint8)
    good[: h // 2, : w // 2] = 1
    cases: list[Case] = []

    def add(name: str, data: bytes, why: str, expect: str = "refuse") -> None:
        (folder / name).write_bytes(data)
        cases.append(Case(name, expect, why, size if expect == "read" else None))

    add("m_small.png", encode(good[:-2], "PNG"), "size|mismatch|differ")
    add("m_transposed.png", encode(np.ascontiguousarray(good.T), "PNG"), "size|mismatch|differ")
    bad_values = good.copy()
    bad_values[0, 0] = 7
    add("m_values.png", encode(bad_values, "PNG"), "7|outside|class")
    add("m_jpeg.jpg", encode(good * 100, "JPEG"), "JPEG|lossy")
    colour = np.zeros((h, w, 3), np.uint8)
    colour[: h // 2, : w // 2] = (128, 0, 0)
    add("m_colour.png", encode(colour, "PNG"), "colour")
    add("m_trunc.png", encode(good, "PNG")[:40], "truncated|cannot read|broken")
    add("m_empty.png", b"", "empty|cannot read")
    add("m_bomb.png", png_bomb(20000, 20000), BOMB)
    big16 = good.astype(np.uint16)
    big16[1, 1] = 1000
    add("m_sixteen.png", encode(big16, "PNG"), "1000|outside|class")
    add("m_text.png", b"not a mask\n", "not an image|cannot (read|identify)")
    buf = io.BytesIO()
    frames = [Image.fromarray(good), Image.fromarray(good)]
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    add("m_multiframe.tif", buf.getvalue(), "2 frames")
    ok_pal = Image.frombytes("P", (w, h), good.tobytes())
    ok_pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    ok_pal.save(buf, format="PNG")
    add("m_palette_ok.png", buf.getvalue(), "", expect="read")
    return cases


def run_cli(argv: list[str], capsys, caplog) -> tuple[int, list[str]]:
    """``unetkit ARGV`` in-process: exit code and every line it printed or logged."""
    import logging

    from unetkit.cli import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(argv)
    captured = capsys.readouterr()
    lines = captured.out.splitlines() + captured.err.splitlines()
    lines += [line for r in caplog.records for line in r.getMessage().splitlines()]
    return code, lines
