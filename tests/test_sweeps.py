"""dynsparse.sweeps: generated names and overrides, clashes, validation, the seeds expansion."""

from __future__ import annotations

from typing import Any

import pytest
from dynsparse.sweeps import SweepError, expand_seeds, expand_sweeps, name_part

SAMPLES: dict[str, Any] = {
    "rigl_0.1_0.3": {},
    "rigl_0.1_0.3_b16": {"block_size": 16, "pooling": "SUM"},
    "dense": {"densities": [1.0, 1.0]},
}


def density_sweep(**extra: Any) -> dict[str, Any]:
    return {
        "density": {
            "base": "rigl_0.1_0.3_b16",
            "grid": {
                "densities": [[0.02, 0.3], [0.05, 0.3]],
                "method": ["rigl", "random", "static"],
            },
            **extra,
        }
    }


def problems_of(error: pytest.ExceptionInfo[SweepError]) -> list[tuple[str, str]]:
    return [(p.key, p.problem) for p in error.value.problems]


def test_the_density_sweep_names_and_overrides() -> None:
    generated = expand_sweeps("fc", density_sweep(), SAMPLES)
    assert list(generated) == [
        "density_d0.02-0.3_rigl",
        "density_d0.02-0.3_random",
        "density_d0.02-0.3_static",
        "density_d0.05-0.3_rigl",
        "density_d0.05-0.3_random",
        "density_d0.05-0.3_static",
    ]
    assert generated["density_d0.05-0.3_static"] == {
        "block_size": 16,
        "pooling": "SUM",
        "densities": [0.05, 0.3],
        "method": "static",
    }


def test_generated_overrides_do_not_share_or_change_the_base() -> None:
    samples = {"base": {"optimizer_args": {"beta_1": 0.8}}}
    sweeps = {"s": {"base": "base", "grid": {"optimizer_args.beta_2": [0.99, 0.999]}}}
    generated = expand_sweeps("fc", sweeps, samples)
    assert generated["s_b2-0.99"]["optimizer_args"] == {"beta_1": 0.8, "beta_2": 0.99}
    assert generated["s_b2-0.999"]["optimizer_args"] == {"beta_1": 0.8, "beta_2": 0.999}
    assert samples == {"base": {"optimizer_args": {"beta_1": 0.8}}}


def test_without_base_the_overrides_are_the_grid_alone() -> None:
    generated = expand_sweeps("fc", {"lr": {"grid": {"learning_rate": [0.001, 5e-05]}}}, SAMPLES)
    assert generated == {
        "lr_lr0.001": {"learning_rate": 0.001},
        "lr_lr5e-05": {"learning_rate": 5e-05},
    }


@pytest.mark.parametrize(
    ("key", "value", "all_strings", "part"),
    [
        ("densities", [0.02, 0.3], False, "d0.02-0.3"),
        ("block_size", 16, False, "bs16"),
        ("learning_rate", 0.0005, False, "lr0.0005"),
        ("cosine_schedule.period", 0.5, False, "p0.5"),
        ("permute_input", "block", True, "block"),
        ("regrow_dropped", True, False, "rdtrue"),
        ("update_end", None, False, "uenone"),
        ("hidden_sizes", [300, 100], False, "hs300-100"),
    ],
)
def test_name_parts(key: str, value: Any, all_strings: bool, part: str) -> None:
    assert name_part(key, value, all_strings) == part


def test_names_are_deterministic_and_keep_single_value_keys() -> None:
    sweeps = {"s": {"grid": {"method": ["rigl"], "block_size": [1, 16]}}}
    assert list(expand_sweeps("fc", sweeps, SAMPLES)) == ["s_rigl_bs1", "s_rigl_bs16"]
    assert list(expand_sweeps("fc", sweeps, SAMPLES)) == ["s_rigl_bs1", "s_rigl_bs16"]


def test_seeds_of_a_sweep_go_into_every_generated_sample() -> None:
    generated = expand_sweeps("fc", density_sweep(seeds=3), SAMPLES)
    assert all(o["seeds"] == [1, 2, 3] for o in generated.values())


def test_a_clash_with_a_hand_written_sample_is_an_error() -> None:
    samples = {**SAMPLES, "density_d0.02-0.3_rigl": {}}
    with pytest.raises(SweepError) as error:
        expand_sweeps("fc", density_sweep(), samples)
    assert error.value.key == "fc.sweeps.density"
    assert "'density_d0.02-0.3_rigl', which is also a sample in fc.samples" in str(error.value)
    assert "fix: rename the sweep or the sample" in str(error.value)


def test_a_clash_between_two_sweeps_is_an_error() -> None:
    distinct = {"a": {"grid": {"method": ["rigl", "static"]}}, "a_rigl": {"grid": {"epochs": [1]}}}
    assert list(expand_sweeps("fc", distinct, {})) == ["a_rigl", "a_static", "a_rigl_e1"]
    clashing = {"a": {"grid": {"method": ["b_c"]}}, "a_b": {"grid": {"method": ["c"]}}}
    with pytest.raises(SweepError) as error:
        expand_sweeps("fc", clashing, {})
    assert problems_of(error) == [
        ("fc.sweeps.a_b", "generates 'a_b_c', which sweep 'a' generates too")
    ]


@pytest.mark.parametrize(
    ("sweep", "key", "problem"),
    [
        ({"base": "nope", "grid": {"method": ["rigl"]}}, "fc.sweeps.s.base", "no sample 'nope'"),
        ({"grid": {}}, "fc.sweeps.s.grid", "non-empty mapping"),
        ({"base": "dense"}, "fc.sweeps.s.grid", "non-empty mapping"),
        ({"grid": {"method": "rigl"}}, "fc.sweeps.s.grid.method", "must be a list"),
        ({"grid": {"method": []}}, "fc.sweeps.s.grid.method", "empty"),
        ({"grid": {"method": ["rigl", "rigl"]}}, "fc.sweeps.s.grid.method", "values repeat"),
        ({"grid": {"seeds": [1, 2]}}, "fc.sweeps.s.grid.seeds", "cannot be swept"),
        ({"grid": {"seed": [1, 2]}}, "fc.sweeps.s.grid.seed", "cannot be swept"),
        (
            {"grid": {"cosine_schedule": [{"period": 1.0}]}},
            "fc.sweeps.s.grid.cosine_schedule",
            "values must be numbers",
        ),
        ({"grid": {"method": ["a b"]}}, "fc.sweeps.s.grid", "not a valid sample name"),
        ({"grid": {"method": ["rigl"]}, "bsae": "x"}, "fc.sweeps.s.bsae", "unknown key"),
        ({"grid": {"method": ["rigl"]}, "seeds": 0}, "fc.sweeps.s.seeds", "must be positive"),
        ("rigl", "fc.sweeps.s", "must be a mapping"),
    ],
)
def test_bad_sweeps_name_the_key(sweep: Any, key: str, problem: str) -> None:
    with pytest.raises(SweepError) as error:
        expand_sweeps("fc", {"s": sweep}, SAMPLES)
    assert error.value.key == key
    assert problem in error.value.problems[0].problem
    assert str(error.value).startswith(f"{key}: ")
    assert "; fix: " in str(error.value)


def test_every_problem_is_reported_at_once() -> None:
    sweeps = {
        "s": {"base": "nope", "grid": {"method": "rigl", "block_size": []}},
        "bad name!": {"grid": {"method": ["rigl"]}},
    }
    with pytest.raises(SweepError) as error:
        expand_sweeps("transformer", sweeps, SAMPLES)
    assert [key for key, _ in problems_of(error)] == [
        "transformer.sweeps.s.base",
        "transformer.sweeps.s.grid.method",
        "transformer.sweeps.s.grid.block_size",
        "transformer.sweeps.bad name!",
    ]


def test_no_sweeps_generate_nothing_and_a_non_mapping_is_an_error() -> None:
    assert expand_sweeps("fc", None, SAMPLES) == {}
    with pytest.raises(SweepError, match="fc.sweeps: must be a mapping"):
        expand_sweeps("fc", [1, 2], SAMPLES)  # type: ignore[arg-type]


def test_seed_count_and_list() -> None:
    assert expand_seeds(3, key="fc.defaults.seeds") == [1, 2, 3]
    assert expand_seeds(1, key="k") == [1]
    assert expand_seeds([7, 1, 42], key="k") == [7, 1, 42]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "a seed count must be positive"),
        (-2, "a seed count must be positive"),
        ([], "non-empty list"),
        ("3", "non-empty list"),
        (True, "non-empty list"),
        (2.0, "non-empty list"),
        ([1, 0, -1], "seeds must be positive integers, got [0, -1]"),
        ([1, 2.5, True], "seeds must be positive integers, got [2.5, True]"),
        ([3, 1, 3, 1], "seeds [1, 3] are listed more than once"),
    ],
)
def test_bad_seeds_name_the_key(value: Any, problem: str) -> None:
    with pytest.raises(SweepError) as error:
        expand_seeds(value, key="fc.samples.rigl.seeds")
    assert error.value.key == "fc.samples.rigl.seeds"
    assert problem in str(error.value)
