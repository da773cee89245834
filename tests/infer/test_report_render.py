"""report.html as a real browser shows it: a headless-Chromium screenshot of a tiny demo.

Skipped where no ``chromium`` (or ``chromium-browser``) is on PATH, as in CI; CONTRIBUTING.md
says how to install it. The chart check is checked in the test itself: the same page with a
blank curves.png fails it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from unetkit.demo import run_demo

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 2000

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (CONTRIBUTING.md)")


def _screenshot(page, png, tmp_path) -> None:
    """``chromium --headless --screenshot``; its own profile folder, nothing else touched."""
    assert BROWSER is not None
    subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            f"--window-size={WIDTH},{HEIGHT}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def test_report_renders_with_its_images(tmp_path):
    out = tmp_path / "demo"
    run_demo(out, n_images=8, size=96, budget_s=5, large=(160, 200), epochs=1, progress=False)
    page = out / "report.html"
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    # curves, confusion, a panel, held-out overlays, the large image, objects, thumbnails
    assert len(sources) >= 6 and sources[0] == "run/curves.png"
    missing = [s for s in sources if not (out / s).is_file()]
    assert not missing, missing

    png = tmp_path / "report.png"
    _screenshot(page, png, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shot = Image.open(png)
    assert shot.size == (WIDTH, HEIGHT)
    pixels = np.asarray(shot.convert("RGB"))
    assert _colours(pixels) > 1000  # text, charts and overlays: not one flat colour

    # the first chart (curves.png) sits below the title, the metrics and the class table,
    # inside the page's centred column: where it loaded, that band is a picture (many colours,
    # spread-out values), not the white of a broken image
    column = pixels[:, (WIDTH - 1100) // 2 : (WIDTH + 1100) // 2]
    band = column[470:660]  # the chart's middle (it spans about y 440-700 here)
    assert _colours(band) > 100 and band.std() > 10

    # the same page with curves.png blank (same size, so the same layout): that band turns
    # far plainer, so the check above sees the chart itself
    curves = out / "run" / "curves.png"
    Image.new("RGB", Image.open(curves).size, "white").save(curves)
    blank = tmp_path / "blank.png"
    _screenshot(page, blank, tmp_path)
    plain = np.asarray(Image.open(blank).convert("RGB"))[
        :, (WIDTH - 1100) // 2 : (WIDTH + 1100) // 2
    ]
    assert _colours(plain[470:660]) < _colours(band) / 4
