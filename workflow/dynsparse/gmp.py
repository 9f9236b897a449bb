"""Gradual magnitude pruning (Zhu & Gupta 2017) of block-sparse layers that start dense.

Each sparse layer starts with every block of its grid and, at the pruning steps of its
`GmpSchedule` (cubic in the density, dynsparse.schedules), drops its smallest-L1 blocks
(`rigl.select_pruned`, as RigL's drop) down to ⌈d(t)·blocks⌉; nothing regrows. The layers are
`SparseLinear(variable_blocks=True)`: the native op always runs on the blocks left, the dropped
ones leave values, rows, cols and the optimizer slots (no retrace: their first dimension is
dynamic). Records keep the full grid so that every record of a layer has one shape: a pruned
block is recorded as a zero block at its position (`recorded_pattern`).

Pure numpy apart from the layers and optimizer it is handed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynsparse import rigl
from dynsparse.schedules import GmpSchedule
from dynsparse.settings import GmpSettings


@dataclass(frozen=True)
class GmpSteps:
    """The pruning steps in training steps (batches done): start, start + every, ..., end."""

    start_step: int
    end_step: int
    every: int


def gmp_steps(gmp: GmpSettings, total_steps: int) -> GmpSteps:
    """`start` and `end` as steps of a run of `total_steps`; end rounds down to the last pruning
    step, so that the final density is reached exactly there. Raises ValueError when no whole
    `every` fits between them (the config check says so before any job)."""
    start_step = math.floor(gmp.start * total_steps + 1e-9)
    span = math.floor(gmp.end * total_steps + 1e-9) - start_step
    if span < gmp.every:
        raise ValueError(gmp_span_problem(gmp, total_steps))
    return GmpSteps(start_step, start_step + span // gmp.every * gmp.every, gmp.every)


def gmp_span_problem(gmp: GmpSettings, total_steps: int) -> str:
    start_step = math.floor(gmp.start * total_steps + 1e-9)
    end_step = math.floor(gmp.end * total_steps + 1e-9)
    return (
        f"gmp: start {gmp.start} and end {gmp.end} of the {total_steps} training steps leave "
        f"{end_step - start_step} steps, fewer than one pruning interval (every: {gmp.every}); "
        "lower every, widen start..end, or train longer"
    )


def prune_to(layer: Any, optimizer: Any, keep: int) -> bool:
    """Drop `layer`'s smallest-L1 blocks (and their optimizer slots) until `keep` are left.

    The kept blocks keep their order, values and optimizer state. Returns whether it pruned.
    """
    rows, cols, values = layer.pattern()
    n_drop = len(rows) - keep
    if n_drop <= 0:
        return False
    dropped = rigl.select_pruned(values, rows, cols, layer.grid_shape, n_drop)
    kept = np.setdiff1d(np.arange(len(rows)), dropped)  # sorted: the order is kept

    def gather(array: np.ndarray) -> np.ndarray:
        return array[kept]

    layer.assign_pattern(rows[kept], cols[kept], values[kept])
    optimizer.relayout(layer.values, gather)
    return True


class GmpPruner:
    """The pruning of every sparse layer of one run, a pure function of the step count."""

    def __init__(
        self, layers: Sequence[Any], final_densities: Mapping[str, float], steps: GmpSteps
    ) -> None:
        self.layers = list(layers)
        self.steps = steps
        self.schedules = {
            layer.layer_name: GmpSchedule(
                steps.start_step,
                steps.end_step,
                steps.every,
                final_density=final_densities[layer.layer_name],
            )
            for layer in self.layers
        }
        # The full grid of each layer as it started (dense): the records' fixed block list.
        self.full_grid = {layer.layer_name: layer.pattern()[:2] for layer in self.layers}

    def blocks_at(self, layer: Any, step: int) -> int:
        """The blocks `layer` holds after `step` training steps."""
        density = self.schedules[layer.layer_name].density(step)
        return rigl.block_count(density, layer.n_in, layer.n_out, layer.block_size)

    def final_blocks(self) -> dict[str, int]:
        return {
            layer.layer_name: self.blocks_at(layer, self.steps.end_step) for layer in self.layers
        }

    def next_pruning_step(self, after: int) -> int | None:
        """The first pruning step > `after` (None past the end)."""
        start, end, every = self.steps.start_step, self.steps.end_step, self.steps.every
        if after >= end:
            return None
        if after < start:
            return start
        return start + ((after - start) // every + 1) * every

    def prune(self, step: int, optimizer: Any) -> bool:
        """Prune every layer to its target if `step` is a pruning step; whether any changed."""
        if not self.schedules or not next(iter(self.schedules.values())).is_pruning_step(step):
            return False
        changed = [prune_to(layer, optimizer, self.blocks_at(layer, step)) for layer in self.layers]
        return any(changed)

    def recorded_pattern(self, layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The layer on its full starting grid: the blocks held now, zeros where pruned."""
        full_rows, full_cols = self.full_grid[layer.layer_name]
        rows, cols, values = layer.pattern()
        grid = layer.grid_shape
        index_of = np.empty(grid[0] * grid[1], dtype=np.int64)
        index_of[rigl.flat_positions(full_rows, full_cols, grid)] = np.arange(len(full_rows))
        full_values = np.zeros((len(full_rows), *values.shape[1:]), dtype=values.dtype)
        full_values[index_of[rigl.flat_positions(rows, cols, grid)]] = values
        return full_rows, full_cols, full_values
