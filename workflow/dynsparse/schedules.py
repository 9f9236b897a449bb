"""The rules of the extra baselines as pure numpy functions (no TensorFlow import).

- `gmp_density`: gradual magnitude pruning's cubic schedule (Zhu & Gupta 2017).
- `ema_update`: the gradient average that sparse momentum (SNFS, Dettmers & Zettlemoyer 2019)
  grows by.
- `snip_scores`, `top_k_mask`, `snip_global_masks`: SNIP's one-shot |w·g| pruning.
- `drop_mask`, `regrow_mask`, `new_connections`: one prune-and-regrow update on a boolean mask,
  with the published candidate rule (`regrow_dropped=True`) or Graphcore's (`False`).

Masks are boolean arrays of any shape: an element mask, or the block grid of a block-sparse layer
(with scores pooled to the grid first, as `dynsparse.rigl.block_pool` does). Every selection breaks
ties by flat position, lowest first, so results depend only on the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SNFS_MOMENTUM = 0.9


class ScheduleError(ValueError):
    """Inconsistent schedule settings; the message names the setting and the fix."""


# ----------------------------------------------------------------------------- GMP


@dataclass(frozen=True)
class GmpSchedule:
    """Zhu & Gupta's cubic schedule, in densities.

    Pruning happens after training step t (batches done) for t = start_step, start_step +
    frequency, ..., end_step; at those steps the target density is

        d(t) = d_final + (d_initial − d_final)·(1 − (t − start_step)/(end_step − start_step))³

    (the paper's s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(nΔt))³ with d = 1 − s). Between pruning
    steps the density stays at the last target; before start_step it is d_initial, after
    end_step d_final. end_step − start_step must be a multiple of frequency, so that the last
    pruning step reaches d_final exactly.
    """

    start_step: int
    end_step: int
    frequency: int
    final_density: float
    initial_density: float = 1.0

    def __post_init__(self) -> None:
        for name in ("start_step", "end_step", "frequency"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise ScheduleError(f"gmp {name} must be an integer, got {value!r}")
        if self.start_step < 0:
            raise ScheduleError(f"gmp start_step {self.start_step} must be ≥ 0")
        if self.frequency < 1:
            raise ScheduleError(f"gmp frequency {self.frequency} must be ≥ 1 step")
        if self.end_step <= self.start_step:
            raise ScheduleError(
                f"gmp end_step {self.end_step} must come after start_step {self.start_step}"
            )
        span = self.end_step - self.start_step
        if span % self.frequency:
            below = self.start_step + span // self.frequency * self.frequency
            raise ScheduleError(
                f"gmp end_step − start_step = {span} is not a multiple of frequency "
                f"{self.frequency}, so the final density would never be reached at a pruning "
                f"step; use end_step {below} or {below + self.frequency}, or another frequency"
            )
        if not 0.0 < self.final_density <= 1.0:
            raise ScheduleError(f"gmp final density {self.final_density} must be in (0, 1]")
        if not self.final_density <= self.initial_density <= 1.0:
            raise ScheduleError(
                f"gmp initial density {self.initial_density} must lie between the final "
                f"density {self.final_density} and 1 (pruning only removes weights)"
            )

    def check_fits(self, total_steps: int) -> None:
        """Error unless the schedule ends within a run of `total_steps` training steps."""
        if self.end_step > total_steps:
            raise ScheduleError(
                f"gmp end_step {self.end_step} lies beyond the {total_steps} training steps; "
                f"use end_step ≤ {total_steps} or train longer"
            )

    @property
    def pruning_steps(self) -> list[int]:
        return list(range(self.start_step, self.end_step + 1, self.frequency))

    def is_pruning_step(self, step: int) -> bool:
        return (
            self.start_step <= step <= self.end_step
            and (step - self.start_step) % self.frequency == 0
        )

    def density(self, step: int) -> float:
        """The target density in force after `step` training steps."""
        if step < self.start_step:
            return self.initial_density
        if step >= self.end_step:
            return self.final_density
        last = self.start_step + (step - self.start_step) // self.frequency * self.frequency
        progress = (last - self.start_step) / (self.end_step - self.start_step)
        return (
            self.final_density + (self.initial_density - self.final_density) * (1.0 - progress) ** 3
        )


def gmp_density(
    step: int,
    *,
    start_step: int,
    end_step: int,
    frequency: int,
    final_density: float,
    initial_density: float = 1.0,
) -> float:
    """`GmpSchedule(...).density(step)` in one call."""
    schedule = GmpSchedule(start_step, end_step, frequency, final_density, initial_density)
    return schedule.density(step)


def keep_count(n_weights: int, density: float) -> int:
    """Weights kept at `density`: n − ⌊(1 − density)·n⌋, rigl's `get_n_zeros` rounding."""
    return n_weights - math.floor((1.0 - density) * n_weights + 1e-9)


# ----------------------------------------------------------------------------- selection


def _top_k_flat(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k candidate flat positions with the highest scores, ties to the lowest position.

    A partition instead of a full sort: fc1 has 250 000 candidates per update.
    """
    n = candidates.size
    if not 0 <= k <= n:
        raise ValueError(f"cannot select {k} of {n} positions")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    values = np.nan_to_num(scores.ravel()[candidates].astype(np.float64), nan=-np.inf)
    threshold = np.partition(values, n - k)[n - k]
    above = candidates[values > threshold]
    tied = np.sort(candidates[values == threshold])[: k - above.size]
    return np.sort(np.concatenate([above, tied])).astype(np.int64)


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k highest `scores` (NaN lowest), ties to the lowest flat position."""
    scores = np.asarray(scores)
    mask = np.zeros(scores.size, dtype=bool)
    mask[_top_k_flat(scores, np.arange(scores.size), k)] = True
    return mask.reshape(scores.shape)


# ----------------------------------------------------------------------------- SNFS


def ema_update(
    average: np.ndarray, grad: np.ndarray, momentum: float = SNFS_MOMENTUM
) -> np.ndarray:
    """One step of the dense-gradient average SNFS grows by: m·average + (1 − m)·grad.

    Start from zeros, as rigl's `SparseMomentumOptimizer` (a TensorFlow ExponentialMovingAverage
    of the gradient tensor, no zero-debiasing) does. Dettmers' code keeps PyTorch's momentum
    buffer m·buf + g instead: the same average times 1/(1 − m) in steady state, so the same
    ranking within a layer. Updated on every training step, so SNFS needs the dense gradient
    of every sparse layer on every step, not only on update steps.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    average = np.asarray(average, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    if average.shape != grad.shape:
        raise ValueError(f"average shape {average.shape} differs from gradient {grad.shape}")
    return momentum * average + (1.0 - momentum) * grad


# ----------------------------------------------------------------------------- SNIP


def snip_scores(weights: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """SNIP's connection sensitivity |w·g| of a dense initialisation on one batch."""
    weights = np.asarray(weights, dtype=np.float64)
    grads = np.asarray(grads, dtype=np.float64)
    if weights.shape != grads.shape:
        raise ValueError(f"weights shape {weights.shape} differs from gradient {grads.shape}")
    return np.abs(weights * grads)


def snip_global_masks(scores: Mapping[str, np.ndarray], density: float) -> dict[str, np.ndarray]:
    """SNIP as in the paper: one top-k over the scores of all layers together.

    rigl's `SparseSnipOptimizer` instead keeps each layer's own density (`top_k_mask` per layer
    with `keep_count(n, density_of_layer)`); this is the alternative where layers compete.
    Ties go to the earlier layer (in `scores` order), then the lower position.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density {density} must be in (0, 1]")
    names = list(scores)
    flat = np.concatenate([np.asarray(scores[n], dtype=np.float64).ravel() for n in names])
    keep = top_k_mask(flat, keep_count(flat.size, density))
    masks, offset = {}, 0
    for name in names:
        shape = np.shape(scores[name])
        size = math.prod(shape)
        masks[name] = keep[offset : offset + size].reshape(shape)
        offset += size
    return masks


# ----------------------------------------------------------------------------- drop and regrow


def drop_mask(mask: np.ndarray, weights: np.ndarray, n_drop: int) -> np.ndarray:
    """The kept mask: `mask` without its n_drop active positions of smallest |weight|."""
    mask = np.asarray(mask, dtype=bool)
    weights = np.asarray(weights)
    if mask.shape != weights.shape:
        raise ValueError(f"mask shape {mask.shape} differs from weights {weights.shape}")
    active = np.flatnonzero(mask)
    if not 0 <= n_drop <= active.size:
        raise ValueError(f"cannot drop {n_drop} of {active.size} active positions")
    magnitude = -np.abs(weights.astype(np.float64))
    dropped = _top_k_flat(magnitude, active, n_drop)
    kept = mask.ravel().copy()
    kept[dropped] = False
    return kept.reshape(mask.shape)


def regrow_mask(
    old_mask: np.ndarray,
    kept_mask: np.ndarray,
    scores: np.ndarray,
    n_grow: int,
    *,
    regrow_dropped: bool = True,
) -> np.ndarray:
    """The new mask: `kept_mask` plus the n_grow best-scoring candidate positions.

    Candidates are every position outside `kept_mask` when `regrow_dropped` (google-research/rigl,
    jaxpruner: a connection dropped in this update may come straight back), or every position
    outside `old_mask` when not (Graphcore's variant, today's `dynsparse.rigl`: the whole
    pre-update pattern is excluded). Scores: |gradient| for RigL, |EMA gradient| for SNFS,
    uniform random numbers (from the run's generator) for SET/random. NaN scores rank last; ties
    go to the lowest flat position.
    """
    old_mask = np.asarray(old_mask, dtype=bool)
    kept_mask = np.asarray(kept_mask, dtype=bool)
    scores = np.asarray(scores)
    if not old_mask.shape == kept_mask.shape == scores.shape:
        raise ValueError(
            f"old mask {old_mask.shape}, kept mask {kept_mask.shape} and scores "
            f"{scores.shape} must have one shape"
        )
    if np.any(kept_mask & ~old_mask):
        raise ValueError("the kept mask has positions the old mask lacks; drop only removes")
    excluded = kept_mask if regrow_dropped else old_mask
    candidates = np.flatnonzero(~excluded.ravel())
    if not 0 <= n_grow <= candidates.size:
        raise ValueError(f"cannot regrow {n_grow}: only {candidates.size} candidate positions")
    new = kept_mask.ravel().copy()
    new[_top_k_flat(scores, candidates, n_grow)] = True
    return new.reshape(old_mask.shape)


def new_connections(old_mask: np.ndarray, new_mask: np.ndarray) -> np.ndarray:
    """Positions active now but not before the update: these start at zero with zero state.

    A connection dropped and regrown in the same update is not new: like rigl, it keeps its
    weight and optimizer state.
    """
    return np.asarray(new_mask, dtype=bool) & ~np.asarray(old_mask, dtype=bool)
