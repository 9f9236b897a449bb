"""dynsparse.distributions against hand values and an independent ε bisection."""

from __future__ import annotations

import math

import pytest
from dynsparse.distributions import (
    DistributionError,
    layer_densities,
    raw_score,
    rigl_nonzeros,
    total_density,
)

LENET_300_100 = {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}
OUR_FC = {"fc1": (784, 320), "fc2": (320, 10)}


def water_filling(shapes: dict[str, tuple[int, ...]], target: int) -> dict[str, float]:
    """Independent reference: bisect ε so that Σ min(1, ε·pᵢ)·nᵢ = target (ERK scores)."""
    scores = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    sizes = {n: math.prod(s) for n, s in shapes.items()}

    def total(eps: float) -> float:
        return sum(min(1.0, eps * scores[n]) * sizes[n] for n in shapes)

    low, high = 0.0, 1.0
    while total(high) < target:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if total(middle) < target else (low, middle)
    return {n: min(1.0, high * scores[n]) for n in shapes}


def nonzeros(shapes: dict[str, tuple[int, ...]], densities: dict[str, float]) -> float:
    return sum(densities[n] * math.prod(s) for n, s in shapes.items())


@pytest.mark.parametrize("shapes", [LENET_300_100, OUR_FC], ids=["lenet300100", "fc320"])
@pytest.mark.parametrize("density", [0.02, 0.05, 0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("distribution", ["erk", "erdos_renyi"])
def test_erk_totals_match_a_brute_force_bisection(
    shapes: dict[str, tuple[int, ...]], density: float, distribution: str
) -> None:
    target = sum(math.prod(s) - math.floor(round((1 - density) * math.prod(s), 6)) for s in
                 shapes.values())  # fmt: skip
    result = layer_densities(shapes, density, distribution)
    assert nonzeros(shapes, result) == pytest.approx(target, rel=1e-12)
    reference = water_filling(shapes, target)
    for name in shapes:
        assert result[name] == pytest.approx(reference[name], rel=1e-9, abs=1e-12)
    assert all(0 < d <= 1 for d in result.values())


def test_lenet_erk_at_ten_percent_by_hand() -> None:
    # p = 1084/235200, 400/30000, 110/1000; target 23520 + 3000 + 100 = 26620.
    # ε = 26620/1594 = 16.70 makes fc3 1.84 > 1 → dense; ε = (26620 − 1000)/1484 = 17.264.
    result = layer_densities(LENET_300_100, 0.1, "erk")
    eps = 25620 / 1484
    assert result == pytest.approx({"fc1": eps * 1084 / 235200, "fc2": eps * 400 / 30000,
                                    "fc3": 1.0})  # fmt: skip
    assert result["fc1"] == pytest.approx(0.07957, abs=1e-5)
    assert total_density(LENET_300_100, result) == pytest.approx(26620 / 266200)


def test_our_fc_erk_at_ten_percent_by_hand() -> None:
    # fc2 (p = 330/3200) goes dense; fc1 gets (25088 + 320 − 3200)/250880 = 22208/250880.
    result = layer_densities(OUR_FC, 0.1, "erk")
    assert result == pytest.approx({"fc1": 22208 / 250880, "fc2": 1.0})


def test_densification_repeats_until_no_layer_exceeds_one() -> None:
    # LeNet at 44 %: target 103488 + 13200 + 440 = 117128. Round 1: ε = 117128/1594 = 73.5 puts
    # fc3 at 8.1 (dense) and fc2 at 0.98 (fine). Round 2: ε = 116128/1484 = 78.3 puts fc2 at
    # 1.04, so fc2 goes dense too, and fc1 takes the rest.
    shapes = LENET_300_100
    scores = {n: raw_score(s, "erk") for n, s in shapes.items()}
    first_eps = 117128 / 1594
    assert first_eps * scores["fc3"] > 1 > first_eps * scores["fc2"]
    assert 116128 / 1484 * scores["fc2"] > 1
    result = layer_densities(shapes, 0.44, "erk")
    assert result["fc2"] == 1.0 and result["fc3"] == 1.0
    assert result["fc1"] == pytest.approx((117128 - 31000) / 235200)


def test_uniform_gives_every_layer_the_target() -> None:
    assert layer_densities(LENET_300_100, 0.1) == {"fc1": 0.1, "fc2": 0.1, "fc3": 0.1}


def test_er_and_erk_differ_only_for_kernels_with_more_than_two_dimensions() -> None:
    assert raw_score((784, 300), "erk") == raw_score((784, 300), "erdos_renyi")
    assert raw_score((3, 3, 64, 128), "erdos_renyi") == pytest.approx(192 / 8192)
    assert raw_score((3, 3, 64, 128), "erk") == pytest.approx(198 / 73728)
    assert raw_score((784, 300), "erk", erk_power_scale=0.0) == 1.0


def test_power_scale_zero_is_uniform() -> None:
    result = layer_densities(LENET_300_100, 0.1, "erk", erk_power_scale=0.0)
    assert result == pytest.approx({"fc1": 0.1, "fc2": 0.1, "fc3": 0.1})


def test_custom_layers_lie_outside_the_target_as_in_rigl() -> None:
    # rigl's MNIST script: layer3 sparsity 0 (dense) via custom_sparsity_map.
    result = layer_densities(LENET_300_100, 0.1, "erk", custom={"fc3": 1.0})
    assert result["fc3"] == 1.0
    counted = {n: LENET_300_100[n] for n in ("fc1", "fc2")}
    assert nonzeros(counted, result) == pytest.approx(23520 + 3000)


def test_dense_layers_count_in_the_target() -> None:
    result = layer_densities(OUR_FC, 0.1, "uniform", dense=["fc2"])
    assert result == pytest.approx({"fc1": (25408 - 3200) / 250880, "fc2": 1.0})
    assert total_density(OUR_FC, result) == pytest.approx(25408 / 254080)


def test_rigl_rounds_zeros_down_without_float_artefacts() -> None:
    assert rigl_nonzeros(1000, 0.3) == 300
    assert rigl_nonzeros(1001, 0.5) == 501
    assert rigl_nonzeros(10, 1.0) == 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dense": ["fc1"]}, "cannot reach density 0.1: the dense layers \\['fc1'\\]"),
        ({"distribution": "gaussian"}, "unknown distribution 'gaussian'"),
        ({"density": 0.0}, r"density 0.0 must be in \(0, 1\]"),
        ({"density": 1.5}, r"density 1.5 must be in \(0, 1\]"),
        ({"custom": {"fc9": 0.5}}, r"no layers named \['fc9'\]"),
        ({"custom": {"fc1": 0.0}}, "custom density 0.0"),
        ({"custom": {"fc1": 0.5}, "dense": ["fc1"]}, "both custom and dense"),
        ({"custom": {"fc1": 0.5, "fc2": 0.5}}, "nothing is left"),
    ],
)
def test_bad_targets_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"density": 0.1, "distribution": "erk", **kwargs}
    with pytest.raises(DistributionError, match=match):
        layer_densities(OUR_FC, **arguments)  # type: ignore[arg-type]


def test_a_layer_left_with_less_than_one_weight_cannot_reach_the_target() -> None:
    # Target 1 + 1 weights; ERK gives "big" 2000/(2000 + 100001) of them, 0.04 of a weight.
    shapes = {"big": (1000, 1000), "thin": (1, 100_000)}
    with pytest.raises(DistributionError, match="layer 'big'.*less than one weight"):
        layer_densities(shapes, 1e-7, "erk")


@pytest.mark.parametrize("shape", [(784,), (0, 10)])
def test_bad_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(DistributionError, match="two positive dimensions"):
        layer_densities({"fc1": shape}, 0.1)


def test_density_one_is_dense_everywhere() -> None:
    assert layer_densities(LENET_300_100, 1.0, "erk") == {"fc1": 1.0, "fc2": 1.0, "fc3": 1.0}
