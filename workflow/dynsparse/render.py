"""Connectivity pictures: one PNG per recorded step (for the GIF) and an initial-vs-final figure.

Everything is drawn with matplotlib's Agg backend into an RGB array and written with imageio.
All frames of a sample share one colour scale, so the animation compares like with like; one
figure is reused for every frame (only the data and the texts change), which keeps a 51-frame
sample at a few seconds.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import imageio.v3 as iio  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dynsparse.atomic import atomic_path, write_text  # noqa: E402
from dynsparse.blocks import load_npz  # noqa: E402
from dynsparse.methods import METHODS  # noqa: E402
from dynsparse.registry import MODELS  # noqa: E402

DPI = 100
FC_FRAME_INCHES = (6.4, 4.8)  # 640 x 480, the original GIF's size
TRANSFORMER_FRAME_INCHES = (8.0, 6.0)
FRAME_PATTERN = "frame_{index:06d}.png"


@dataclass(frozen=True)
class Frame:
    index: int
    update_index: int
    step: int


def _update_word(method: str) -> str:
    return METHODS[method].update_word if method in METHODS else "update"


def figure_rgb(figure: Figure) -> np.ndarray:
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb)


def _frames(connectivity: Mapping[str, np.ndarray]) -> list[Frame]:
    return [
        Frame(i, int(u), int(s))
        for i, (u, s) in enumerate(
            zip(connectivity["update_index"], connectivity["step"], strict=True)
        )
    ]


def _progress(frame: Frame, n_updates: int, method: str) -> str:
    return f"{_update_word(method)} {frame.update_index}/{n_updates}"


def _no_ticks(axes: plt.Axes) -> None:
    axes.set_xticks([])
    axes.set_yticks([])


def _message_frame(inches: tuple[float, float], title: str, message: str) -> np.ndarray:
    figure = plt.figure(figsize=inches, dpi=DPI)
    figure.suptitle(title)
    figure.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=12)
    rgb = figure_rgb(figure)
    plt.close(figure)
    return rgb


# ---- FC: connections per input pixel ------------------------------------------------------------


def fc_frame_renderer(
    connectivity: Mapping[str, np.ndarray], sample: str, cmap: str, method: str
) -> Callable[[Frame], np.ndarray]:
    n_updates = int(connectivity["n_updates"])
    if "connections_per_pixel" not in connectivity:
        return lambda frame: _message_frame(
            FC_FRAME_INCHES,
            f"{sample}: connections per pixel",
            "The first layer is dense:\nevery pixel connects to every hidden unit.",
        )
    counts = np.asarray(connectivity["connections_per_pixel"])
    vmax = max(int(counts.max()), 1)
    figure, axes = plt.subplots(figsize=FC_FRAME_INCHES, dpi=DPI)
    image = axes.imshow(counts[0], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    _no_ticks(axes)
    colour_bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colour_bar.set_label("connections to hidden units")
    title = axes.set_title("")
    caption = axes.set_xlabel("")

    def render(frame: Frame) -> np.ndarray:
        field = counts[frame.index]
        image.set_data(field)
        title.set_text(f"{sample}: connections per pixel ({_progress(frame, n_updates, method)})")
        caption.set_text(
            f"after {frame.step} batches · {np.count_nonzero(field == 0)} unconnected pixels · "
            f"fewest {field.min()}, most {field.max()} per pixel"
        )
        return figure_rgb(figure)

    return render


def fc_initial_vs_final(
    connectivity: Mapping[str, np.ndarray], sample: str, cmap: str
) -> np.ndarray:
    if "connections_per_pixel" not in connectivity:
        return _message_frame(
            (12.0, 4.2),
            f"{sample}: connections per pixel, initial vs final",
            "The first layer is dense: every pixel connects to every hidden unit.",
        )
    counts = np.asarray(connectivity["connections_per_pixel"])
    frames = _frames(connectivity)
    initial, final = counts[0], counts[-1]
    vmax = max(int(counts.max()), 1)
    change = final.astype(np.int64) - initial
    reach = max(int(np.abs(change).max()), 1)
    figure, axes = plt.subplots(1, 3, figsize=(12.0, 4.2), dpi=DPI, layout="constrained")
    for ax, field, label in (
        (axes[0], initial, f"initial (update {frames[0].update_index})"),
        (axes[1], final, f"final (update {frames[-1].update_index}, {frames[-1].step} batches)"),
    ):
        shown = ax.imshow(field, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{label}\n{np.count_nonzero(field == 0)} unconnected pixels", fontsize=10)
        _no_ticks(ax)
    figure.colorbar(shown, ax=axes[:2], label="connections to hidden units", shrink=0.9)
    moved = axes[2].imshow(change, cmap="coolwarm", vmin=-reach, vmax=reach)
    axes[2].set_title("final − initial", fontsize=10)
    _no_ticks(axes[2])
    figure.colorbar(moved, ax=axes[2], label="change in connections", shrink=0.9)
    figure.suptitle(f"{sample}: connections per pixel, initial vs final")
    rgb = figure_rgb(figure)
    plt.close(figure)
    return rgb


# ---- transformer: embedding connections per feature and per-layer density maps -----------------


def _layer_label(connectivity: Mapping[str, np.ndarray], name: str) -> str:
    n_in, n_out = (int(v) for v in connectivity[f"{name}/shape"])
    return f"{name} {n_in}×{n_out}, bs {int(connectivity[f'{name}/block_size'])}"


def _grid(n: int) -> tuple[int, int]:
    columns = min(n, 4) if n > 0 else 1
    return math.ceil(n / columns) if n else 1, columns


def _feature_colours(padded: int, real: int, cmap: str) -> list[Any]:
    colour = matplotlib.colormaps[cmap](0.55)
    return [colour if f < real else (0.6, 0.6, 0.6, 1.0) for f in range(padded)]


def transformer_frame_renderer(
    connectivity: Mapping[str, np.ndarray], sample: str, cmap: str, method: str
) -> Callable[[Frame], np.ndarray]:
    n_updates = int(connectivity["n_updates"])
    layers = [str(name) for name in np.asarray(connectivity["layers"]).tolist()]
    if not layers:
        return lambda frame: _message_frame(
            TRANSFORMER_FRAME_INCHES, f"{sample}: connectivity", "Dense model: no sparse layers."
        )
    maps = {name: np.asarray(connectivity[f"{name}/density_map"]) for name in layers}
    vmax = max(float(m.max()) for m in maps.values()) or 1.0
    has_features = "connections_per_feature" in connectivity
    figure = plt.figure(figsize=TRANSFORMER_FRAME_INCHES, dpi=DPI, layout="constrained")
    rows, columns = _grid(len(layers))
    top, bottom = figure.subfigures(2, 1, height_ratios=[1, 2])  # type: ignore[misc]
    bars = None
    if has_features:
        features = np.asarray(connectivity["connections_per_feature"])
        real = int(connectivity["input_features"])
        bar_axes = top.subplots()
        bars = bar_axes.bar(
            np.arange(features.shape[1]),
            features[0],
            color=_feature_colours(features.shape[1], real, cmap),
        )
        bar_axes.set_ylim(0, max(int(features.max()), 1) * 1.08)
        bar_axes.set_xlim(-0.6, features.shape[1] - 0.4)
        bar_axes.set_xlabel("input feature (image column; grey: zero padding)", fontsize=9)
        bar_axes.set_ylabel("connections", fontsize=9)
        bar_axes.set_title("embedding projection: connections per input feature", fontsize=10)
        bar_axes.tick_params(labelsize=8)
    else:
        top.text(0.5, 0.5, "embedding projection is dense", ha="center", va="center")
    map_axes = np.atleast_1d(bottom.subplots(rows, columns)).ravel()
    images = []
    for ax, name in zip(map_axes, layers, strict=False):
        images.append(
            ax.imshow(
                maps[name][0], cmap=cmap, vmin=0, vmax=vmax, aspect="auto", interpolation="nearest"
            )
        )
        ax.set_title(_layer_label(connectivity, name), fontsize=8)
        _no_ticks(ax)
    for ax in map_axes[len(layers) :]:
        ax.set_axis_off()
    colour_bar = bottom.colorbar(images[0], ax=map_axes.tolist(), shrink=0.9)
    colour_bar.set_label(
        "fraction of weights connected (rows: inputs, columns: outputs)", fontsize=8
    )
    title = figure.suptitle("x")
    figure.canvas.draw()
    # Lay out once: later frames change only data and texts, and constrained layout per frame
    # would cost most of the rendering time.
    figure.set_layout_engine("none")

    def render(frame: Frame) -> np.ndarray:
        if bars is not None:
            for bar, height in zip(bars, features[frame.index], strict=True):
                bar.set_height(height)
        for image, name in zip(images, layers, strict=True):
            image.set_data(maps[name][frame.index])
        title.set_text(
            f"{sample}: sparse connectivity ({_progress(frame, n_updates, method)}, "
            f"{frame.step} batches)"
        )
        return figure_rgb(figure)

    return render


def transformer_initial_vs_final(
    connectivity: Mapping[str, np.ndarray], sample: str, cmap: str
) -> np.ndarray:
    layers = [str(name) for name in np.asarray(connectivity["layers"]).tolist()]
    title = f"{sample}: connectivity, initial vs final"
    if not layers:
        return _message_frame((12.0, 6.0), title, "Dense model: no sparse layers.")
    maps = {name: np.asarray(connectivity[f"{name}/density_map"]) for name in layers}
    vmax = max(float(m.max()) for m in maps.values()) or 1.0
    figure = plt.figure(figsize=(12.0, 7.0), dpi=DPI, layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[1, 1.6])  # type: ignore[misc]
    if "connections_per_feature" in connectivity:
        features = np.asarray(connectivity["connections_per_feature"])
        real = int(connectivity["input_features"])
        ax = top.subplots()
        x = np.arange(features.shape[1])
        colours = matplotlib.colormaps[cmap]
        ax.bar(x - 0.2, features[0], width=0.4, color=colours(0.3), label="initial")
        ax.bar(x + 0.2, features[-1], width=0.4, color=colours(0.7), label="final")
        if features.shape[1] > real:
            ax.axvspan(
                real - 0.5, features.shape[1] - 0.5, color="0.88", zorder=0, label="zero padding"
            )
        ax.set_xlim(-0.6, features.shape[1] - 0.4)
        ax.set_xlabel("input feature (image column)")
        ax.set_ylabel("connections")
        ax.set_title("embedding projection: connections per input feature")
        ax.legend(fontsize=8)
    else:
        top.text(0.5, 0.5, "embedding projection is dense", ha="center", va="center")
    axes = np.atleast_2d(bottom.subplots(2, len(layers)))
    for column, name in enumerate(layers):
        for row, (index, when) in enumerate(((0, "initial"), (-1, "final"))):
            ax = axes[row, column]
            shown = ax.imshow(
                maps[name][index],
                cmap=cmap,
                vmin=0,
                vmax=vmax,
                aspect="auto",
                interpolation="nearest",
            )
            ax.set_title(f"{name} ({when})", fontsize=8)
            _no_ticks(ax)
    bottom.colorbar(shown, ax=axes.ravel().tolist(), label="fraction of weights connected")
    figure.suptitle(title)
    rgb = figure_rgb(figure)
    plt.close(figure)
    return rgb


# ---- the stage ----------------------------------------------------------------------------------


def frames_index_html(sample: str, names: list[str]) -> str:
    images = "\n".join(
        f'<figure><img src="{name}" alt="{name}"><figcaption>{name}</figcaption></figure>'
        for name in names
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{sample}: frames</title>"
        "<style>figure{display:inline-block;margin:4px}img{width:320px}</style></head>\n"
        f"<body><h1>{sample}: connectivity frames</h1>\n{images}\n</body></html>\n"
    )


@dataclass(frozen=True)
class Pictures:
    """How one kind of model input is drawn: the frames, the comparison and whether it moves."""

    frame_renderer: Callable[..., Callable[[Any], np.ndarray]]
    initial_vs_final: Callable[..., np.ndarray]
    changes: Callable[[Mapping[str, np.ndarray]], bool]


# Keyed by the registry entry's `picture_inputs`.
PICTURES = {
    "pixels": Pictures(
        fc_frame_renderer, fc_initial_vs_final, lambda c: "connections_per_pixel" in c
    ),
    "features": Pictures(
        transformer_frame_renderer,
        transformer_initial_vs_final,
        lambda c: len(np.asarray(c["layers"])) > 0,
    ),
}


def pictures_of(connectivity: Mapping[str, np.ndarray]) -> Pictures:
    return PICTURES[MODELS[str(connectivity["model"])].picture_inputs]


def has_pattern_pictures(connectivity: Mapping[str, np.ndarray]) -> bool:
    return pictures_of(connectivity).changes(connectivity)


def render_frames(
    connectivity_path: str | os.PathLike[str],
    frames_dir: str | os.PathLike[str],
    comparison_path: str | os.PathLike[str],
    sample: str,
    cmap: str = "magma",
    method: str = "rigl",
) -> list[Path]:
    """Write every frame into `frames_dir` (replacing it whole) and the initial-vs-final PNG."""
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {cmap!r} (render.cmap); try magma, viridis, cividis")
    connectivity = load_npz(connectivity_path)
    pictures = pictures_of(connectivity)
    frames = _frames(connectivity)
    if not pictures.changes(connectivity):
        frames = frames[:1]  # a dense model's picture does not change: one frame says it
    renderer = pictures.frame_renderer(connectivity, sample, cmap, method)
    comparison = pictures.initial_vs_final(connectivity, sample, cmap)

    target = Path(frames_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        names = []
        for frame in frames:
            name = FRAME_PATTERN.format(index=frame.index)
            iio.imwrite(staging / name, renderer(frame))
            names.append(name)
        write_text(staging / "index.html", frames_index_html(sample, names))
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        plt.close("all")
    write_png(comparison_path, comparison)
    return [target / name for name in names]
