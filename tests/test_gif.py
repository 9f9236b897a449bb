"""GIF assembly: frame count, per-frame delay and looping read back, ImageMagick and imageio."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from dynsparse.gif import assemble_gif, find_imagemagick, report_animation
from PIL import Image

IMAGEMAGICK = find_imagemagick()


def make_frames(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.zeros((48, 64, 3), dtype=np.uint8)
        image[:, : 16 * (i + 1)] = (255, 120, 30)
        iio.imwrite(folder / f"frame_{i:06d}.png", image)
    (folder / "index.html").write_text("<html></html>")  # not a frame
    return folder


def assert_frames_match(gif: Path, frames: Path) -> None:
    decoded = iio.imread(gif, index=None)[..., :3].astype(int)
    sources = [iio.imread(p).astype(int) for p in sorted(frames.glob("frame_*.png"))]
    for image, source in zip(decoded, sources, strict=True):
        assert np.abs(image - source).max() <= 16


def read_back(path: Path) -> tuple[int, list[int], int | None]:
    frames = iio.imread(path, index=None)
    durations = [iio.immeta(path, index=i)["duration"] for i in range(len(frames))]
    with Image.open(path) as gif:
        loop = gif.info.get("loop")
    return len(frames), durations, loop


def test_imageio_fallback_keeps_delay_and_loop(tmp_path: Path) -> None:
    frames = make_frames(tmp_path / "frames")
    tool = assemble_gif(frames, tmp_path / "a.gif", delay=20, loop=0, use_imagemagick=False)
    assert tool == "imageio"
    assert read_back(tmp_path / "a.gif") == (4, [200] * 4, 0)
    assert_frames_match(tmp_path / "a.gif", frames)


def test_fallback_when_imagemagick_is_not_on_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = make_frames(tmp_path / "frames")
    empty = tmp_path / "empty_path"
    empty.mkdir()
    tool = assemble_gif(frames, tmp_path / "b.gif", delay=35, loop=2, search_path=str(empty))
    assert tool == "imageio" and "not found" in caplog.text
    assert read_back(tmp_path / "b.gif") == (4, [350] * 4, 2)


def test_a_convert_that_is_not_imagemagick_is_ignored(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "convert"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'convert: ImageMagick is not installed here'\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert find_imagemagick(str(fake.parent)) is None


@pytest.mark.skipif(
    IMAGEMAGICK is None,
    reason="ImageMagick is not installed (no magick/convert whose -version says ImageMagick)",
)
def test_imagemagick_keeps_delay_and_loop(tmp_path: Path) -> None:
    frames = make_frames(tmp_path / "frames", count=5)
    tool = assemble_gif(frames, tmp_path / "c.gif", delay=20, loop=0)
    assert tool.startswith("ImageMagick")
    assert read_back(tmp_path / "c.gif") == (5, [200] * 5, 0)
    assert_frames_match(tmp_path / "c.gif", frames)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_no_frames_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    with pytest.raises(FileNotFoundError, match="frame_"):
        assemble_gif(tmp_path / "frames", tmp_path / "d.gif", use_imagemagick=False)
    assert not (tmp_path / "d.gif").exists()


def test_report_animation_is_a_lossless_webp_of_every_frame(tmp_path: Path) -> None:
    frames = make_frames(tmp_path / "frames", count=4)  # all different (WebP merges repeats)
    animation = report_animation(frames, delay=20, loop=0, budget_bytes=1_000_000)
    assert (animation.frame_step, animation.frames_shown, animation.frames_total) == (1, 4, 4)
    with Image.open(io.BytesIO(animation.webp)) as webp:
        assert webp.format == "WEBP" and webp.n_frames == 4
        for index, source in enumerate(sorted(frames.glob("frame_*.png"))):
            webp.seek(index)
            assert np.array_equal(np.asarray(webp.convert("RGB")), iio.imread(source)[..., :3])


def test_report_animation_thins_frames_to_fit_its_budget(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):  # noise: every frame costs about the same
        iio.imwrite(folder / f"frame_{i:06d}.png", rng.integers(0, 255, (64, 64, 3), np.uint8))
    full = report_animation(folder, delay=20, loop=0, budget_bytes=10**7)
    budget = len(full.webp) // 3
    thinned = report_animation(folder, delay=20, loop=0, budget_bytes=budget)
    assert len(thinned.webp) <= budget and thinned.frame_step >= 3
    with Image.open(io.BytesIO(thinned.webp)) as webp:
        assert webp.n_frames == thinned.frames_shown < 12
        webp.seek(webp.n_frames - 1)  # the last frame is always shown
        last = iio.imread(folder / "frame_000011.png")
        assert np.array_equal(np.asarray(webp.convert("RGB")), last)
