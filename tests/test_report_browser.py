"""The report's connectivity pages render in a real browser (headless Chromium).

The report opens each result page from a `data:` URL, which Chromium refuses past 2 MB: the page
stays blank. A page built from frames the size of a full FC run (201 updates, 640x480) must stay
well below that and show both pictures; the old page (the GIF itself, base64 inside the HTML) is
the control that shows the check sees a blank page. tests/test_pipeline.py runs the same check on
a real `snakemake --report`.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest
from dynsparse.gif import write_connectivity_page
from dynsparse.report import DATA_URL_LIMIT_BYTES, data_url_size
from report_browser import Browser, find_chromium, report_results, show_result

if find_chromium() is None:
    if os.environ.get("DYNSPARSE_BROWSER_REQUIRED"):
        raise RuntimeError("chromium is required here (DYNSPARSE_BROWSER_REQUIRED) but missing")
    pytest.skip(
        "chromium is not installed (apt-get install chromium; .ci/run installs it)",
        allow_module_level=True,
    )

MIN_COLOURED = 0.05  # of the iframe's area; a blank page is 0


def realistic_frames(folder: Path, count: int = 201) -> Path:
    """Frames like an FC run's: a 28x28 map drawn blocky into 640x480, drifting a little per
    update, with a noisy texture that compresses about as badly as the real ones."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cmap = matplotlib.colormaps["magma"]
    field = rng.random((28, 28))
    for i in range(count):
        field = np.clip(field + rng.normal(0, 0.03, field.shape), 0, 1)
        image = np.full((480, 640, 3), 255, dtype=np.uint8)
        picture = (cmap(np.kron(field, np.ones((13, 13))))[..., :3] * 255).astype(np.uint8)
        image[58 : 58 + 364, 140 : 140 + 364] = picture
        image[10:30, 100 : 100 + (i * 2) % 400] = 0  # a changing title line
        iio.imwrite(folder / f"frame_{i:06d}.png", image)
    return folder


def mock_report(folder: Path, pages: dict[str, Path]) -> Path:
    """The parts of a Snakemake report that show a result: `results[path].data_uri` and
    `app.setView`, which puts the data: URL into an iframe (as the report's content view does)."""
    results = {
        name: {
            "data_uri": "data:text/html;charset=utf8;filename=connectivity.html;base64,"
            + base64.b64encode(page.read_bytes()).decode()
        }
        for name, page in pages.items()
    }
    report = folder / "report.html"
    report.write_text(
        "<!DOCTYPE html><html><body style='margin:0'><div id='content'></div><script>"
        f"var results = {json.dumps(results)};"
        "var app = {setView(view) { const box = document.getElementById('content');"
        " box.innerHTML = ''; const frame = document.createElement('iframe');"
        " frame.style = 'width:1380px;height:980px;border:0'; frame.src = view.contentPath;"
        " box.appendChild(frame); }};</script></body></html>"
    )
    return report


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pages")
    frames = realistic_frames(folder / "frames")
    comparison = folder / "initial_vs_final.png"
    iio.imwrite(comparison, np.full((420, 1200, 3), (40, 10, 80), dtype=np.uint8))
    gif = folder / "connectivity.gif"
    iio.imwrite(gif, np.stack([iio.imread(p) for p in sorted(frames.glob("*.png"))]), loop=0)
    new = folder / "connectivity.html"
    write_connectivity_page(frames, comparison, gif, new, "fc / full: connectivity", 20, 0)
    old = folder / "old.html"  # the previous wrapper: the whole GIF inside the page
    encoded = base64.b64encode(gif.read_bytes()).decode()
    old.write_text(f"<html><body><img src='data:image/gif;base64,{encoded}'></body></html>")
    return {"new": new, "old": old}


def test_a_full_size_page_stays_well_under_the_data_url_limit(pages: dict[str, Path]) -> None:
    size = data_url_size(pages["new"].stat().st_size)
    assert size < 0.75 * DATA_URL_LIMIT_BYTES, size
    assert data_url_size(pages["old"].stat().st_size) > DATA_URL_LIMIT_BYTES  # the control


def test_the_page_shows_the_animation_and_the_comparison(
    pages: dict[str, Path], tmp_path: Path
) -> None:
    report = mock_report(tmp_path, {"fc/full/connectivity.html": pages["new"]})
    with Browser() as browser:
        browser.open(report)
        assert report_results(browser, "connectivity.html") == ["fc/full/connectivity.html"]
        shown = show_result(browser, "fc/full/connectivity.html")
    assert shown.frame_url.startswith("data:text/html")
    sizes = {i["alt"]: (i["naturalWidth"], i["naturalHeight"]) for i in shown.images}
    assert sizes == {
        "connectivity over training": (640, 480),
        "initial versus final connectivity": (1200, 420),
    }
    assert shown.all_images_decoded and shown.coloured_fraction > MIN_COLOURED


def test_the_old_page_is_blank_in_chromium(pages: dict[str, Path], tmp_path: Path) -> None:
    """The control: the check does see a page that Chromium refuses to open."""
    report = mock_report(tmp_path, {"fc/old/connectivity.html": pages["old"]})
    with Browser(timeout_s=8) as browser:
        browser.open(report)
        shown = show_result(browser, "fc/old/connectivity.html", settle_s=0.2)
    assert not shown.all_images_decoded
    assert shown.coloured_fraction < MIN_COLOURED
