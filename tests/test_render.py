"""Frame rendering on small generated records."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from dynsparse.extract import extract_records
from dynsparse.render import render_frames
from fake_records import fc_records, history_arrays, transformer_records, write_sample


def extracted_sample(tmp_path: Path, model: str, records: dict[str, np.ndarray]) -> Path:
    folder = write_sample(tmp_path / model / "s", model, "s", {}, records, history_arrays())
    extract_records(
        folder / "records.npz",
        folder / "history.npz",
        folder / "extracted" / "connectivity.npz",
        folder / "extracted" / "metrics.csv",
        folder / "extracted" / "derived.json",
    )
    return folder


def render(folder: Path, **options: str) -> list[Path]:
    return render_frames(
        folder / "extracted" / "connectivity.npz",
        folder / "frames",
        folder / "initial_vs_final.png",
        sample="s",
        **options,
    )


def test_fc_frames_one_per_record_same_size(tmp_path: Path) -> None:
    folder = extracted_sample(tmp_path, "fc", fc_records(n_updates=3, permute=True))
    frames = render(folder)
    assert [p.name for p in frames] == [f"frame_{i:06d}.png" for i in range(4)]
    images = [iio.imread(p) for p in frames]
    assert {image.shape for image in images} == {(480, 640, 3)}
    assert not np.array_equal(images[0], images[-1])
    comparison = iio.imread(folder / "initial_vs_final.png")
    assert comparison.ndim == 3 and comparison.shape[1] > comparison.shape[0]
    assert (folder / "frames" / "index.html").is_file()


def test_colormap_changes_the_pixels(tmp_path: Path) -> None:
    folder = extracted_sample(tmp_path, "fc", fc_records(n_updates=1))
    magma = iio.imread(render(folder)[0])
    viridis = iio.imread(render(folder, cmap="viridis")[0])
    assert magma.shape == viridis.shape and not np.array_equal(magma, viridis)


def test_unknown_colormap_fails_before_writing(tmp_path: Path) -> None:
    folder = extracted_sample(tmp_path, "fc", fc_records(n_updates=1))
    with pytest.raises(ValueError, match="not_a_colormap"):
        render(folder, cmap="not_a_colormap")
    assert not (folder / "frames").exists() and not (folder / "initial_vs_final.png").exists()


def test_rerender_replaces_stale_frames(tmp_path: Path) -> None:
    folder = extracted_sample(tmp_path, "fc", fc_records(n_updates=1))
    (folder / "frames").mkdir()
    (folder / "frames" / "frame_000009.png").write_bytes(b"stale")
    render(folder)
    assert sorted(p.name for p in (folder / "frames").glob("frame_*.png")) == [
        "frame_000000.png",
        "frame_000001.png",
    ]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(lambda: transformer_records(block_size=8, n_updates=2), id="transformer-b8"),
        pytest.param(
            lambda: transformer_records(block_size=1, sparsity=0.9, n_updates=1),
            id="transformer-b1",
        ),
        pytest.param(
            lambda: transformer_records(sparsity=0.0, n_updates=1), id="transformer-dense"
        ),
        pytest.param(lambda: fc_records(densities=(1.0, 1.0), n_updates=1), id="fc-dense"),
        pytest.param(lambda: fc_records(block_size=16, n_updates=1), id="fc-b16"),
    ],
)
def test_other_shapes_render(tmp_path: Path, records) -> None:
    arrays = records()
    folder = extracted_sample(tmp_path, str(arrays["model"]), arrays)
    frames = render(folder)
    dense = len(arrays["layers"]) == 0
    assert len(frames) == (1 if dense else len(arrays["step"]))
    assert len({iio.imread(p).shape for p in frames}) == 1
    assert iio.imread(folder / "initial_vs_final.png").ndim == 3
