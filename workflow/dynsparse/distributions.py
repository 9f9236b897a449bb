"""Per-layer densities for one global density target: uniform, Erdős–Rényi, Erdős–Rényi-kernel.

The algorithm is that of google-research/rigl `sparse_utils.get_sparsities_erdos_renyi`, written
in densities instead of sparsities:

- every counted layer i of n_i weights has a raw score p_i: Erdős–Rényi (n_in + n_out)/(n_in·n_out)
  from the last two dimensions of its shape, ERK sum(shape)/prod(shape) raised to
  `erk_power_scale` (for 2-D fully connected weights the two are identical);
- the target is rigl's count of non-zeros, Σ (n_i − ⌊(1 − density)·n_i⌋);
- ε solves ε·Σ p_i·n_i = target − (weights of the layers already dense);
- if the largest ε·p_i exceeds 1, every layer with that largest p_i becomes dense (its weights
  still count in the target) and ε is solved again, until no density exceeds 1.

Which layers are counted: every layer passed in `shapes`. Two rigl mechanisms are offered on top:
`custom` (rigl's `custom_sparsity_map`): layers with a given density that lie *outside* the
target, so the target applies to the other layers only (rigl's MNIST script keeps its last layer
dense this way, `layer3: sparsity 0`); and `dense`: layers kept dense that *count* in the target,
as rigl's own dense-ified layers do (so the others get sparser). Nothing is kept dense by
default: our models sparsify their last layer today.

A target the counted layers cannot meet is a `DistributionError`: a density outside (0, 1], or
`dense` layers that alone hold more weights than the target.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

DISTRIBUTIONS = ("uniform", "erdos_renyi", "erk")

# ⌊(1 − 0.3)·1000⌋ must be 700, not 699 (0.7·1000 = 699.9999999999999 in binary floating point).
_FLOOR_SLACK = 1e-9
# ε·p_max = 1 + 1e-16 after rounding is not a reason to make a layer dense.
_DENSE_SLACK = 1e-12


class DistributionError(ValueError):
    """A density target that cannot be distributed; the message names the layers and the fix."""


def _n_weights(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def rigl_nonzeros(n_weights: int, density: float) -> int:
    """rigl's non-zero count of a layer: n − ⌊(1 − density)·n⌋ (`get_n_zeros` rounds down)."""
    return n_weights - math.floor((1.0 - density) * n_weights + _FLOOR_SLACK)


def raw_score(shape: Sequence[int], distribution: str, erk_power_scale: float = 1.0) -> float:
    """The unnormalised density p of one layer (ε·p is its density)."""
    if distribution == "erdos_renyi":
        n_in, n_out = (int(d) for d in shape[-2:])
        return (n_in + n_out) / (n_in * n_out)
    if distribution == "erk":
        return (sum(int(d) for d in shape) / _n_weights(shape)) ** erk_power_scale
    raise ValueError(f"no raw score for distribution {distribution!r}")


def _check_inputs(
    shapes: Mapping[str, Sequence[int]],
    density: float,
    distribution: str,
    custom: Mapping[str, float],
    dense: Collection[str],
) -> None:
    if distribution not in DISTRIBUTIONS:
        raise DistributionError(
            f"unknown distribution {distribution!r}; use one of {', '.join(DISTRIBUTIONS)}"
        )
    if not shapes:
        raise DistributionError("no layers to distribute a density over")
    for name, shape in shapes.items():
        if len(shape) < 2 or any(int(d) <= 0 for d in shape):
            raise DistributionError(
                f"layer {name!r}: shape {list(shape)} must have at least two positive dimensions"
            )
    if not 0.0 < density <= 1.0:
        raise DistributionError(f"density {density} must be in (0, 1]")
    unknown = (set(custom) | set(dense)) - set(shapes)
    if unknown:
        raise DistributionError(f"no layers named {sorted(unknown)}; the layers are {list(shapes)}")
    both = set(custom) & set(dense)
    if both:
        raise DistributionError(f"layers {sorted(both)} are both custom and dense; pick one")
    for name, value in custom.items():
        if not 0.0 < value <= 1.0:
            raise DistributionError(f"layer {name!r}: custom density {value} must be in (0, 1]")
    if not set(shapes) - set(custom):
        raise DistributionError("every layer has a custom density; nothing is left to distribute")


def layer_densities(
    shapes: Mapping[str, Sequence[int]],
    density: float,
    distribution: str = "uniform",
    *,
    custom: Mapping[str, float] | None = None,
    dense: Collection[str] = (),
    erk_power_scale: float = 1.0,
) -> dict[str, float]:
    """The density of every layer in `shapes` (name → weight shape, e.g. (n_in, n_out)).

    `density` is the global target over the counted layers (all but `custom`). Order of the
    result follows `shapes`.
    """
    custom = dict(custom or {})
    _check_inputs(shapes, density, distribution, custom, dense)
    counted = [name for name in shapes if name not in custom]
    sizes = {name: _n_weights(shapes[name]) for name in counted}
    target = sum(rigl_nonzeros(sizes[name], density) for name in counted)
    dense_weights = sum(sizes[name] for name in dense)
    if any(name not in dense for name in counted) and dense_weights >= target:
        raise DistributionError(
            f"cannot reach density {density}: the dense layers {sorted(dense)} alone hold "
            f"{dense_weights} weights, at least the target of {target}, leaving nothing for the "
            f"other layers; raise the density or keep fewer layers dense"
        )

    if distribution == "uniform":
        # Without dense layers every layer gets `density` itself, as in rigl's uniform.
        sparse = [name for name in counted if name not in dense]
        share = density
        if dense and sparse:
            share = (target - dense_weights) / sum(sizes[name] for name in sparse)
        result = {name: 1.0 if name in dense else share for name in counted}
    else:
        scores = {name: raw_score(shapes[name], distribution, erk_power_scale) for name in counted}
        result = _erdos_renyi(sizes, scores, target, dense)
    for name in counted:
        if result[name] * sizes[name] < 1.0:
            raise DistributionError(
                f"cannot reach density {density} with {distribution}: layer {name!r} "
                f"({sizes[name]} weights) would get density {result[name]:.3g}, less than one "
                f"weight; raise the density or use another distribution"
            )
    result.update(custom)
    return {name: float(min(1.0, result[name])) for name in shapes}


def _erdos_renyi(
    sizes: Mapping[str, int], scores: Mapping[str, float], target: int, dense: Collection[str]
) -> dict[str, float]:
    """ε·pᵢ for the layers that stay sparse, 1 for those dense from the start or made dense."""
    dense_now = set(dense)
    while True:
        sparse = [name for name in sizes if name not in dense_now]
        if not sparse:
            return {name: 1.0 for name in sizes}
        remaining = target - sum(sizes[name] for name in dense_now)
        epsilon = remaining / sum(scores[name] * sizes[name] for name in sparse)
        top = max(scores[name] for name in sparse)
        if epsilon * top <= 1.0 + _DENSE_SLACK:
            result = {name: epsilon * scores[name] for name in sparse}
            result.update({name: 1.0 for name in dense_now})
            return result
        dense_now |= {name for name in sparse if scores[name] == top}


def total_density(shapes: Mapping[str, Sequence[int]], densities: Mapping[str, float]) -> float:
    """Σ densityᵢ·nᵢ / Σ nᵢ over the layers in `shapes`."""
    sizes = {name: _n_weights(shape) for name, shape in shapes.items()}
    return sum(densities[name] * sizes[name] for name in sizes) / sum(sizes.values())
