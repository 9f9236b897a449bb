"""Frames to an animated GIF: ImageMagick where it is really installed, imageio otherwise.

Both paths use the same delay (hundredths of a second per frame, ImageMagick's unit) and loop
count (0 = forever). The report does not show GIFs inline and a browser refuses a page of several
megabytes from a `data:` URL, so `report_animation` makes a lossless animated WebP of the frames
that fits a size budget, and `write_connectivity_page` puts it in the report's page of the sample.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from dynsparse.atomic import atomic_path, write_text
from dynsparse.report import (
    DATA_URL_LIMIT_BYTES,
    animation_budget,
    connectivity_page,
    data_url_size,
)

log = logging.getLogger(__name__)

IMAGEMAGICK_NAMES = ("magick", "convert")
FRAME_GLOB = "frame_*.png"
COMMAND_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ImageMagick:
    path: str
    version: str  # the first line of `-version`


def find_imagemagick(search_path: str | None = None) -> ImageMagick | None:
    """`magick` or `convert` on PATH whose `-version` shows it is really ImageMagick.

    A `convert` that is something else (another program of that name, or a stand-in script)
    prints no "Version: ImageMagick" line and is skipped.
    """
    for name in IMAGEMAGICK_NAMES:
        found = shutil.which(name, path=search_path)
        if found is None:
            continue
        try:
            completed = subprocess.run(
                [found, "-version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            log.info("%s is not usable: %s", found, error)
            continue
        first_line = (completed.stdout.splitlines() or [""])[0]
        if completed.returncode == 0 and first_line.startswith("Version: ImageMagick"):
            return ImageMagick(found, first_line)
        log.info("%s is not ImageMagick (its -version says %r)", found, first_line[:80])
    return None


def frame_paths(frames_dir: str | os.PathLike[str]) -> list[Path]:
    frames = sorted(Path(frames_dir).glob(FRAME_GLOB))
    if not frames:
        raise FileNotFoundError(f"no {FRAME_GLOB} in {frames_dir}")
    return frames


def imagemagick_gif(
    tool: ImageMagick, frames: list[Path], output: Path, delay: int, loop: int
) -> None:
    with atomic_path(output) as tmp:
        # No dithering and frame differencing: on 51 frames of 640x480 this is ~4x faster and
        # 5x smaller than plain `convert`, with decoded frames within a few levels of the PNGs.
        command = [
            tool.path, "-delay", str(delay), "-loop", str(loop), *map(str, frames),
            "+dither", "-layers", "Optimize", str(tmp),
        ]  # fmt: skip
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"ImageMagick failed (exit {completed.returncode}): {completed.stderr.strip()}"
            )


def imageio_gif(frames: list[Path], output: Path, delay: int, loop: int) -> None:
    images = np.stack([iio.imread(frame)[..., :3] for frame in frames])
    with atomic_path(output) as tmp:
        # Pillow takes milliseconds; GIF stores hundredths of a second.
        iio.imwrite(tmp, images, extension=".gif", duration=delay * 10, loop=loop)


def assemble_gif(
    frames_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    delay: int = 20,
    loop: int = 0,
    use_imagemagick: bool = True,
    search_path: str | None = None,
) -> str:
    """Write the GIF; return which tool wrote it ("ImageMagick ..." or "imageio")."""
    if delay < 1 or loop < 0:
        raise ValueError(f"delay must be >= 1 and loop >= 0 (got {delay}, {loop})")
    frames = frame_paths(frames_dir)
    output = Path(output)
    tool = find_imagemagick(search_path) if use_imagemagick else None
    if tool is not None:
        log.info("assembling %d frames with %s (%s)", len(frames), tool.path, tool.version)
        imagemagick_gif(tool, frames, output, delay, loop)
        return f"ImageMagick {tool.path}"
    log.warning(
        "ImageMagick (magick or convert) not found on PATH: writing the GIF with imageio instead "
        "(same delay and loop); install the 'imagemagick' package to use it"
    )
    imageio_gif(frames, output, delay, loop)
    return "imageio"


@dataclass(frozen=True)
class ReportAnimation:
    """A lossless animated WebP of the frames, small enough to embed in the report."""

    webp: bytes
    frame_step: int  # every frame_step-th frame is shown (the last one always)
    frames_shown: int
    frames_total: int


def _every(items: list[Path], step: int) -> list[Path]:
    chosen = items[::step]
    if chosen[-1] != items[-1]:
        chosen.append(items[-1])
    return chosen


def _webp(frames: list[Path], delay: int, loop: int) -> bytes:
    from PIL import Image

    images = [Image.open(frame).convert("RGB") for frame in frames]
    buffer = io.BytesIO()
    # Lossless keeps the colour scale exact; WebP stores only what changed between frames, so
    # an FC sample's 201 frames take ~0.5 MB here against ~4 MB as a GIF.
    images[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=delay * 10,
        loop=loop,
        lossless=True,
        method=4,
    )
    return buffer.getvalue()


def report_animation(
    frames_dir: str | os.PathLike[str], delay: int, loop: int, budget_bytes: int
) -> ReportAnimation:
    """Every frame as an animated WebP, or every 2nd, 3rd, ... frame until it fits the budget.

    The report shows each result page from a `data:` URL, and browsers refuse long ones
    (Chromium: 2 MB), so the embedded animation has a hard size budget.
    """
    frames = frame_paths(frames_dir)
    step = 1
    while True:
        chosen = _every(frames, step)
        webp = _webp(chosen, delay, loop)
        if len(webp) <= budget_bytes or len(chosen) <= 2:
            break
        # Size grows about linearly with the frame count: jump close to the fitting step.
        step = max(step + 1, math.ceil(step * len(webp) / budget_bytes))
    if len(webp) > budget_bytes:
        raise ValueError(
            f"even 2 frames of {frames_dir} take {len(webp)} bytes as WebP, over the report's "
            f"budget of {budget_bytes}; render smaller frames"
        )
    return ReportAnimation(webp, step, len(chosen), len(frames))


def write_connectivity_page(
    frames_dir: str | os.PathLike[str],
    comparison: str | os.PathLike[str],
    gif: str | os.PathLike[str],
    page: str | os.PathLike[str],
    title: str,
    delay: int,
    loop: int,
) -> str:
    """Write the report page of one sample; return a line saying what it holds."""
    comparison_png = Path(comparison).read_bytes()
    animation = report_animation(frames_dir, delay, loop, animation_budget(title, comparison_png))
    shown = (
        f"all {animation.frames_total} frames"
        if animation.frame_step == 1
        else f"every {animation.frame_step}th of {animation.frames_total} frames "
        f"({animation.frames_shown} shown, the last included) to fit the report"
    )
    animation_note = (
        f"Connectivity after each recorded update: {shown}, {delay / 100:g} s each. "
        f"Every frame, full size: {Path(gif).name} and frames/ in the sample's results folder."
    )
    comparison_note = f"Before training and after the last update ({Path(comparison).name})."
    text = connectivity_page(title, animation.webp, comparison_png, animation_note, comparison_note)
    write_text(page, text)
    size = len(text.encode())
    return (
        f"{size} bytes ({data_url_size(size)} as the report's data: URL; limit "
        f"{DATA_URL_LIMIT_BYTES}), WebP {len(animation.webp)} bytes, {shown}"
    )
