"""RigL prune-and-regrow on the host, in plain numpy (no TensorFlow import).

A sparse layer's pattern is `rows`, `cols` (block coordinates, int32 [N]) and `values`
(float32 [N, bs, bs]). One update drops the k blocks of smallest L1 magnitude and regrows k
blocks among the candidates: every position not *kept* (the published rule of google-research/rigl
and jaxpruner: a just-dropped block may come back with its weight and optimizer state), or every
position not active before the update (Graphcore's rule, `regrow_dropped: false`). Regrowth goes
where the pooled |dense gradient| is largest (`rigl`), where its moving average is (`snfs`) or
uniformly at random (`set`, `random`); `static` never changes the pattern.
The methods themselves are classes in dynsparse.methods; this module holds their arithmetic.

The result is a `PatternUpdate`: the new pattern, sorted row-major, plus for every new slot the
index of the old block it came from (-1 for a new block). Weights and every optimizer slot are
re-laid out with the same `PatternUpdate.gather`, so kept (and dropped-and-regrown) blocks keep
their values and state and new blocks start at zero with zero state.

Ties are broken by block position (row-major flat index, lowest first), never by list order or by
an unstable sort, so an update depends only on the pattern, the values and the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dynsparse.blocks import pool

# ceil() of a product like 0.3 * 10 = 3.0000000000000004 must give 3, not 4.
_CEIL_SLACK = 1e-9


def cosine_schedule(
    update: int,
    total_updates: int,
    *,
    zero_steps: int = 0,
    phase_delay: float = 0.0,
    period: float = 0.5,
) -> float:
    """The fraction f(t) of the maximum prune count used at update `t` (1-based) of `total_updates`.

    f(t) = 0 for t < zero_steps, else 0.5·(1 + cos(phase_delay + period·2π·(t − z)/(T − z))).
    With the defaults this decays from ≈1 at t = 1 to 0 at t = T.
    """
    if total_updates <= 0:
        raise ValueError(f"total_updates must be positive, got {total_updates}")
    if update < zero_steps:
        return 0.0
    span = total_updates - zero_steps
    if span <= 0:
        return 0.0
    angle = phase_delay + period * 2.0 * math.pi * (update - zero_steps) / span
    return max(0.0, 0.5 * (1.0 + math.cos(angle)))


def _ceil(x: float) -> int:
    return math.ceil(x - _CEIL_SLACK)


def prune_count(n_blocks: int, prune_ratio: float, schedule_value: float) -> int:
    """k = ceil(ceil(prune_ratio · N) · f(t))."""
    return _ceil(_ceil(prune_ratio * n_blocks) * schedule_value)


def block_l1(values: np.ndarray) -> np.ndarray:
    """L1 norm of each block of `values` [N, bs, bs] (or [N] for scalars), as float64 [N]."""
    magnitudes = np.abs(np.asarray(values, dtype=np.float64))
    return magnitudes.reshape(magnitudes.shape[0], -1).sum(axis=1)


def grid_scores(dense_grad: np.ndarray, grid_shape: tuple[int, int], block_size: int) -> np.ndarray:
    """Regrowth scores on the block grid.

    A gradient that is already on the grid (pooled by the op) is used as it is; an element gradient
    (pooling NONE) of a block layer is SUM-pooled here, as the original's host did.
    """
    grad = np.abs(np.asarray(dense_grad, dtype=np.float64))
    if grad.shape == tuple(grid_shape):
        return grad
    element_shape = (grid_shape[0] * block_size, grid_shape[1] * block_size)
    if grad.shape != element_shape:
        raise ValueError(
            f"dense gradient shape {grad.shape} matches neither the block grid {grid_shape} "
            f"nor the element shape {element_shape}"
        )
    return pool(grad, block_size, "SUM")


def flat_positions(rows: np.ndarray, cols: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64) * grid_shape[1] + np.asarray(cols, dtype=np.int64)


def top_k(scores: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest `scores`, ties going to the lowest `positions`; sorted.

    O(n) with a partition instead of a full sort: a RigL update ranks every free position of a
    layer (250 000 for fc1), 100 times per FC run.
    """
    n = len(scores)
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} of {n}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == n:
        return np.arange(n, dtype=np.int64)
    threshold = np.partition(scores, n - k)[n - k]
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)
    tied = tied[np.argsort(positions[tied], kind="stable")][: k - len(above)]
    return np.sort(np.concatenate([above, tied]))


def select_pruned(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid_shape: tuple[int, int], k: int
) -> np.ndarray:
    """Indices (into the block list) of the k blocks with the smallest L1 norm, ties by position."""
    if not 0 <= k <= len(rows):
        raise ValueError(f"cannot prune {k} of {len(rows)} blocks")
    return top_k(-block_l1(values), flat_positions(rows, cols, grid_shape), k)


def _candidates(active_flat: np.ndarray, n_positions: int) -> np.ndarray:
    free = np.ones(n_positions, dtype=bool)
    free[active_flat] = False
    return np.flatnonzero(free)


def regrow_rigl(scores: np.ndarray, active_flat: np.ndarray, k: int) -> np.ndarray:
    """Flat positions of the k highest-scoring grid positions not in `active_flat`.

    Ties go to the lowest flat position, so zero-gradient ties are deterministic.
    """
    candidates = _candidates(active_flat, scores.size)
    if k > len(candidates):
        raise ValueError(f"cannot regrow {k} blocks: only {len(candidates)} inactive positions")
    candidate_scores = np.nan_to_num(scores.ravel()[candidates], nan=-np.inf)
    return candidates[top_k(candidate_scores, candidates, k)]


def regrow_random(
    n_positions: int, active_flat: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k flat positions drawn uniformly without replacement from those not in `active_flat`."""
    candidates = _candidates(active_flat, n_positions)
    if k > len(candidates):
        raise ValueError(f"cannot regrow {k} blocks: only {len(candidates)} inactive positions")
    return np.sort(rng.choice(candidates, size=k, replace=False))


@dataclass(frozen=True)
class PatternUpdate:
    """A new pattern and where each of its blocks came from.

    `source[i]` is the index in the old block list of new block i, or -1 for a regrown block.
    """

    rows: np.ndarray
    cols: np.ndarray
    source: np.ndarray
    n_pruned: int

    def gather(self, old: np.ndarray) -> np.ndarray:
        """Re-lay out per-block data (weights or an optimizer slot): kept blocks move, new are 0."""
        old = np.asarray(old)
        new = np.zeros((len(self.source),) + old.shape[1:], dtype=old.dtype)
        kept = self.source >= 0
        new[kept] = old[self.source[kept]]
        return new

    @property
    def changed(self) -> bool:
        return self.n_pruned > 0


def unchanged(rows: np.ndarray, cols: np.ndarray) -> PatternUpdate:
    return PatternUpdate(
        rows=np.asarray(rows, dtype=np.int32).copy(),
        cols=np.asarray(cols, dtype=np.int32).copy(),
        source=np.arange(len(rows), dtype=np.int64),
        n_pruned=0,
    )


def merge_pattern(
    kept_flat: np.ndarray,
    kept: np.ndarray,
    grown_flat: np.ndarray,
    grid_shape: tuple[int, int],
    old_flat: np.ndarray | None = None,
) -> PatternUpdate:
    """The kept blocks (flat positions and old indices) plus the grown ones, sorted row-major.

    With `old_flat` (the whole pre-update pattern) a grown position that was active before the
    update (dropped and regrown at once, the published rule) keeps its old block: weight and
    optimizer state, as in google-research/rigl. Without it every grown block is new.
    """
    n_blocks = len(kept_flat) + len(grown_flat)
    new_flat = np.concatenate([kept_flat, grown_flat])
    grown_source = np.full(len(grown_flat), -1, dtype=np.int64)
    if old_flat is not None and len(grown_flat):
        old_index = {int(position): i for i, position in enumerate(old_flat)}
        grown_source = np.array(
            [old_index.get(int(position), -1) for position in grown_flat], dtype=np.int64
        )
    source = np.concatenate([kept, grown_source])
    order = np.argsort(new_flat, kind="stable")
    new_flat = new_flat[order]
    assert len(new_flat) == n_blocks, "RigL must keep the number of non-zero blocks"
    assert len(np.unique(new_flat)) == n_blocks, "RigL produced duplicate blocks"
    return PatternUpdate(
        rows=(new_flat // grid_shape[1]).astype(np.int32),
        cols=(new_flat % grid_shape[1]).astype(np.int32),
        source=source[order].astype(np.int64),
        n_pruned=int(np.count_nonzero(grown_source < 0)),
    )


def block_count(density: float, n_in: int, n_out: int, block_size: int) -> int:
    """N = ceil(density · (n_in/bs) · (n_out/bs))."""
    return _ceil(density * (n_in // block_size) * (n_out // block_size))


def init_limit(n_in: int, n_out: int, density: float) -> float:
    """L = sqrt(6 / ((fan_in + fan_out) · density)), glorot scaled for the density."""
    return math.sqrt(6.0 / ((n_in + n_out) * density))
