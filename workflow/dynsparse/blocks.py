"""The numpy core shared by every stage: MNIST sizes, block layouts and record files.

No TensorFlow here: the pattern pictures, the summaries and Snakefile parse time import it. The
block sizes and poolings are the ones the native ops are registered for (`ops/*.cc`) and the
config schema allows; tests/test_blocks.py checks all three agree.
"""

from __future__ import annotations

import os

import numpy as np

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10

BLOCK_SIZES = (1, 4, 8, 16)
POOLINGS = ("NONE", "SUM", "AVG", "MAX")


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read eagerly (the file is closed on return)."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def to_dense(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """The matrix [n_in, n_out] holding `values` [N, bs, bs] at block (rows[i], cols[i])."""
    values = np.asarray(values, dtype=np.float32)
    bs = values.shape[1]
    tiles = np.zeros((shape[0] // bs, shape[1] // bs, bs, bs), dtype=np.float32)
    tiles[rows, cols] = values
    return tiles.transpose(0, 2, 1, 3).reshape(shape)


def to_mask(
    rows: np.ndarray, cols: np.ndarray, block_size: int, shape: tuple[int, int]
) -> np.ndarray:
    """Boolean [n_in, n_out]: the positions covered by the blocks (zero-valued or not)."""
    grid = np.zeros((shape[0] // block_size, shape[1] // block_size), dtype=bool)
    grid[rows, cols] = True
    return np.kron(grid, np.ones((block_size, block_size), dtype=bool)).astype(bool)


def pool(grad: np.ndarray, block_size: int, pooling: str) -> np.ndarray:
    """Pool an element array [n_in, n_out] to the block grid [n_in/bs, n_out/bs] (NONE: as is)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "NONE":
        return np.asarray(grad)
    n_in, n_out = grad.shape
    if n_in % block_size or n_out % block_size:
        raise ValueError(
            f"gradient shape {grad.shape} is not a multiple of block size {block_size}"
        )
    tiles = np.asarray(grad).reshape(
        n_in // block_size, block_size, n_out // block_size, block_size
    )
    if pooling == "SUM":
        return tiles.sum(axis=(1, 3))
    if pooling == "AVG":
        return tiles.mean(axis=(1, 3))
    return tiles.max(axis=(1, 3))


def gather_blocks(dense: np.ndarray, rows: np.ndarray, cols: np.ndarray, bs: int) -> np.ndarray:
    """The blocks [N, bs, bs] of `dense` [n_in, n_out] at block coordinates (rows, cols)."""
    n_in, n_out = dense.shape
    tiles = np.asarray(dense).reshape(n_in // bs, bs, n_out // bs, bs).transpose(0, 2, 1, 3)
    return tiles[np.asarray(rows), np.asarray(cols)]


def random_pattern(
    grid_shape: tuple[int, int], n_blocks: int, rng: np.random.Generator, *, sort: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """n_blocks positions uniformly at random without replacement, sorted row-major (or in the
    order drawn, `sort=False`: the op tests check that no order is assumed)."""
    n_positions = grid_shape[0] * grid_shape[1]
    if not 0 < n_blocks <= n_positions:
        raise ValueError(f"cannot place {n_blocks} blocks on a grid of {n_positions}")
    flat = rng.choice(n_positions, size=n_blocks, replace=False)
    if sort:
        flat = np.sort(flat)
    return (flat // grid_shape[1]).astype(np.int32), (flat % grid_shape[1]).astype(np.int32)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
