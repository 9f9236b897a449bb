"""The method registry: how a sparse layer's pattern changes at an update, one class per method.

Following jaxpruner's SET/RigL split: `RandomRegrowth` prunes the smallest-magnitude blocks and
regrows uniformly at random; `RigL` overrides only the regrowth scores (the pooled |dense
gradient|, so it needs the update step's dense gradient); `Static` never updates; `Dense` is what a
model without sparse layers runs (nothing to update).

Which positions may regrow is the sample's `regrow_dropped`: true (the published rule of
google-research/rigl and jaxpruner, the config default) excludes only the kept blocks, so a block
dropped in this update may come straight back with its weight and optimizer state; false
(Graphcore's mnist_rigl) excludes the whole pre-update pattern. `set` is the published SET and
always uses the published rule; `random` follows `regrow_dropped` (with false: Graphcore's
random-regrowth variant).
Pure numpy: the pattern arithmetic lives in dynsparse.rigl.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from dynsparse import rigl
from dynsparse.rigl import PatternUpdate


class Method:
    name: ClassVar[str]
    updates: ClassVar[bool] = True  # whether the pattern changes at an update
    needs_dense_grad: ClassVar[bool] = False  # whether the update step computes |Xᵀ·dY|
    # Whether every training step averages the dense gradient (SNFS: no separate update step).
    grad_every_step: ClassVar[bool] = False
    # Whether the initial pattern comes from a dense twin's one-batch |w·g| (SNIP) at init.
    prunes_at_init: ClassVar[bool] = False
    update_word: ClassVar[str] = "update"  # what the pictures call one of its updates
    # Whether the sparse layers start dense and shrink to their density (GMP, dynsparse.gmp).
    prunes_gradually: ClassVar[bool] = False

    def initial_density(self, target: float) -> float:
        """The density a sparse layer of `target` density starts training at."""
        return 1.0 if self.prunes_gradually else target

    def regrows_dropped(self, regrow_dropped: bool) -> bool:
        """The candidate rule this method uses, given the sample's `regrow_dropped` setting."""
        return regrow_dropped

    def regrow(
        self,
        excluded_flat: np.ndarray,
        k: int,
        grid_shape: tuple[int, int],
        block_size: int,
        dense_grad: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> np.ndarray:
        """Flat grid positions of the k blocks to grow, none of them in `excluded_flat`."""
        raise NotImplementedError

    def update_pattern(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        values: np.ndarray,
        *,
        grid_shape: tuple[int, int],
        block_size: int,
        k: int,
        dense_grad: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        regrow_dropped: bool = False,
    ) -> PatternUpdate:
        """One update of one layer: prune k blocks, regrow k blocks, keep N constant.

        `regrow_dropped` is the candidate rule (module docstring); False here, Graphcore's, keeps
        direct callers on the original behaviour. Under Graphcore's rule `k` is capped at the
        number of inactive positions (a layer denser than 1/(1+ratio) cannot regrow as many as it
        would prune); under the published rule the k dropped blocks are always candidates.
        """
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        n_blocks = len(rows)
        n_positions = grid_shape[0] * grid_shape[1]
        active_flat = rigl.flat_positions(rows, cols, grid_shape)
        if len(np.unique(active_flat)) != n_blocks:
            raise ValueError("the pattern has duplicate blocks")
        published = self.regrows_dropped(regrow_dropped)
        k = min(k, n_blocks if published else n_positions - n_blocks)
        if not self.updates or k <= 0:
            return rigl.unchanged(rows, cols)
        pruned = rigl.select_pruned(values, rows, cols, grid_shape, k)
        kept = np.setdiff1d(np.arange(n_blocks), pruned)
        if published:
            grown_flat = self.regrow(active_flat[kept], k, grid_shape, block_size, dense_grad, rng)
            return rigl.merge_pattern(
                active_flat[kept], kept, grown_flat, grid_shape, old_flat=active_flat
            )
        grown_flat = self.regrow(active_flat, k, grid_shape, block_size, dense_grad, rng)
        return rigl.merge_pattern(active_flat[kept], kept, grown_flat, grid_shape)


class RandomRegrowth(Method):
    """Regrow uniformly at random (a persistent generator: it advances every update).

    With `regrow_dropped: true` the same rule as `set`; with false Graphcore's random regrowth.
    """

    name = "random"
    update_word = "random-regrowth update"

    def regrow(
        self,
        excluded_flat: np.ndarray,
        k: int,
        grid_shape: tuple[int, int],
        block_size: int,
        dense_grad: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> np.ndarray:
        if rng is None:
            raise ValueError("random regrowth needs a numpy Generator")
        return rigl.regrow_random(grid_shape[0] * grid_shape[1], excluded_flat, k, rng)


class SET(RandomRegrowth):
    """Published SET (Mocanu et al. 2018): magnitude drop, random regrowth, dropped may regrow."""

    name = "set"
    update_word = "SET update"

    def regrows_dropped(self, regrow_dropped: bool) -> bool:
        return True


class RigL(RandomRegrowth):
    """RigL: regrow where the pooled |dense gradient| is largest, ties to the lowest position."""

    name = "rigl"
    needs_dense_grad = True
    update_word = "RigL update"

    def regrow(
        self,
        excluded_flat: np.ndarray,
        k: int,
        grid_shape: tuple[int, int],
        block_size: int,
        dense_grad: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> np.ndarray:
        if dense_grad is None:
            raise ValueError(f"{self.name} regrowth needs the dense gradient")
        scores = rigl.grid_scores(dense_grad, grid_shape, block_size)
        return rigl.regrow_rigl(scores, excluded_flat, k)


class SNFS(RigL):
    """Sparse momentum: regrow where |moving average of the dense gradient| is largest.

    The average (dynsparse.momentum) is taken over every training step and handed to the update
    as its `dense_grad`; drop by magnitude as RigL. Growth only: Dettmers' redistribution of
    densities across layers is not applied (as in rigl's `SparseMomentumOptimizer`).
    """

    name = "snfs"
    grad_every_step = True
    update_word = "sparse-momentum update"


class Static(Method):
    """The initial random pattern, never changed (records still taken at the update points)."""

    name = "static"
    updates = False


class Snip(Static):
    """SNIP: the pattern of largest |w·g| on one batch of a dense initialisation, then static."""

    name = "snip"
    prunes_at_init = True


class Gmp(Static):
    """Gradual magnitude pruning (Zhu & Gupta 2017): dense to the target density on a cubic
    schedule, smallest-L1 blocks dropped, no regrowth. The pruning runs at its own steps
    (dynsparse.gmp), not at the updates, which only take records."""

    name = "gmp"
    prunes_gradually = True
    update_word = "GMP record"


class Dense(Static):
    """A model without sparse layers, whatever its `method` setting says."""

    name = "dense"


METHODS: dict[str, Method] = {
    m.name: m for m in (RigL(), SET(), SNFS(), RandomRegrowth(), Static(), Snip(), Gmp(), Dense())
}
# The methods a sample may name in config.yaml (the schema's `method` enum).
CONFIG_METHODS = ("rigl", "set", "snfs", "random", "static", "snip", "gmp")


def method_of(name: str, has_sparse_layers: bool = True) -> Method:
    if not has_sparse_layers:
        return METHODS["dense"]
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def update_layers(
    sparse_layers: Sequence[Any],
    optimizer: Any,
    dense_grads: Sequence[np.ndarray] | None,
    schedule_value: float,
    prune_ratio: float,
    method: Method,
    regrow_rng: np.random.Generator,
    regrow_dropped: bool = False,
) -> None:
    """One update of every sparse layer, in place: pattern, values and optimizer slots."""
    for i, layer in enumerate(sparse_layers):
        rows, cols, values = layer.pattern()
        update = method.update_pattern(
            rows,
            cols,
            values,
            grid_shape=layer.grid_shape,
            block_size=layer.block_size,
            k=rigl.prune_count(layer.nnz, prune_ratio, schedule_value),
            dense_grad=None if dense_grads is None else dense_grads[i],
            rng=regrow_rng,
            regrow_dropped=regrow_dropped,
        )
        if update.changed:
            layer.assign_pattern(update.rows, update.cols, update.gather(values))
            optimizer.relayout(layer.values, update.gather)
        assert layer.rows.shape[0] == layer.nnz == layer.values.shape[0], "nnz changed"
