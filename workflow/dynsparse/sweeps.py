"""Samples generated from a `sweeps:` section, and the `seeds:` expansion.

A model's `sweeps:` maps a sweep name to a base sample and a grid::

    fc:
      sweeps:
        density:
          base: rigl_0.1_0.3          # a hand-written sample (optional: the model defaults)
          grid:                       # key -> list of values; the product is generated
            densities: [[0.02, 0.3], [0.05, 0.3]]
            method: [rigl, random, static]
          seeds: 3                    # optional, copied into every generated sample

Every point of the grid's Cartesian product becomes a sample whose overrides are the base
sample's overrides with the grid values put on top (a dotted key such as
`cosine_schedule.period` sets one entry of a nested mapping). Points are generated in grid order:
the first key varies slowest.

Names are `<sweep>_<part>_<part>...`, one part per grid key in grid order, every key always
present (so adding a value to a one-value list renames nothing):

- a key whose values are all strings contributes the value itself: `rigl`, `SUM`;
- any other key contributes a label and the value: the label is the initials of the key's last
  dotted component split at `_` (`densities` → `d`, `block_size` → `bs`, `learning_rate` → `lr`;
  a label ending in a digit is followed by `-`: `beta_2` → `b2-0.99`),
  numbers are written in Python's shortest round-trip form (`0.02`, `1e-05`, `16`), lists join
  their items with `-`, booleans are `true`/`false`, null is `none`.

So the example gives `density_d0.02-0.3_rigl`, `density_d0.02-0.3_random`, ...

`seeds:` is a list of distinct positive integers (its order is kept: the first gets the pictures)
or a count N, meaning seeds 1..N, so raising N only adds seeds and never renumbers one.

Every problem is a `SweepProblem` naming the config key (e.g. `fc.sweeps.density.grid.method`)
and the fix; `expand_sweeps` raises one `SweepError` listing all of them.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SAMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SWEEP_KEYS = ("base", "grid", "seeds")


@dataclass(frozen=True)
class SweepProblem:
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}; fix: {self.fix}"


class SweepError(ValueError):
    """One or more problems of a `sweeps:` or `seeds:` entry; `.problems` has each one."""

    def __init__(self, problems: Sequence[SweepProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def key(self) -> str:
        return self.problems[0].key


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expand_seeds(value: Any, *, key: str) -> list[int]:
    """A `seeds:` value (ints, or a count N → [1..N]) as a list; `key` names it in errors."""
    if _is_int(value):
        if value <= 0:
            raise SweepError(
                [SweepProblem(key, f"a seed count must be positive, got {value}", "use e.g. 3")]
            )
        return list(range(1, value + 1))
    if not isinstance(value, list) or not value:
        raise SweepError(
            [
                SweepProblem(
                    key,
                    f"seeds must be a count or a non-empty list of integers, got {value!r}",
                    "write e.g. `seeds: 3` (seeds 1, 2, 3) or `seeds: [1, 7, 42]`",
                )
            ]
        )
    problems = []
    bad = [s for s in value if not _is_int(s) or s <= 0]
    if bad:
        problems.append(
            SweepProblem(key, f"seeds must be positive integers, got {bad}", "list seeds ≥ 1")
        )
    duplicates = sorted({s for s in value if value.count(s) > 1 and _is_int(s)})
    if duplicates:
        problems.append(
            SweepProblem(
                key, f"seeds {duplicates} are listed more than once", "list each seed once"
            )
        )
    if problems:
        raise SweepError(problems)
    return list(value)


def _label(grid_key: str) -> str:
    last = grid_key.split(".")[-1]
    return "".join(word[0] for word in last.split("_") if word)


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "-".join(_format_value(item) for item in value)
    raise TypeError(f"cannot name a value of type {type(value).__name__}")


def name_part(grid_key: str, value: Any, all_strings: bool) -> str:
    """The piece of a generated name for one grid key's value (see the module docstring)."""
    text = _format_value(value)
    if all_strings:
        return text
    label = _label(grid_key)
    return f"{label}-{text}" if label[-1:].isdigit() else f"{label}{text}"


def _set_path(overrides: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    target = overrides
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[leaf] = copy.deepcopy(value)


def _nameable(value: Any) -> bool:
    try:
        _format_value(value)
    except TypeError:
        return False
    return True


def _grid_problems(grid: Any, where: str) -> list[SweepProblem]:
    if not isinstance(grid, dict) or not grid:
        return [
            SweepProblem(
                where,
                f"the grid must be a non-empty mapping of setting → list of values, got {grid!r}",
                "write e.g. `grid: {method: [rigl, static]}`",
            )
        ]
    problems = []
    for grid_key, values in grid.items():
        at = f"{where}.{grid_key}"
        if grid_key in SWEEP_KEYS or grid_key == "seed":
            problems.append(
                SweepProblem(
                    at,
                    f"`{grid_key}` cannot be swept: seeds are replicates of one sample",
                    "put `seeds:` next to `grid:` in the sweep",
                )
            )
        elif not isinstance(values, list):
            problems.append(
                SweepProblem(
                    at,
                    f"grid values must be a list, got {values!r}",
                    f"write `{grid_key}: [{values!r}]` for a single value",
                )
            )
        elif not values:
            problems.append(SweepProblem(at, "the list of values is empty", "give 1 or more"))
        elif not all(_nameable(v) for v in values):
            problems.append(
                SweepProblem(
                    at,
                    "values must be numbers, strings, booleans, null or lists of those",
                    "sweep a nested setting with a dotted key, e.g. `cosine_schedule.period`",
                )
            )
        elif len({_format_value(v) for v in values}) != len(values):
            problems.append(
                SweepProblem(at, f"values repeat in {values!r}", "list each value once")
            )
    return problems


def _one_sweep(
    model: str, sweep: str, entry: Any, samples: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[SweepProblem]]:
    where = f"{model}.sweeps.{sweep}"
    if not SAMPLE_NAME.fullmatch(sweep):
        return {}, [
            SweepProblem(where, "a sweep name must match [A-Za-z0-9][A-Za-z0-9_.-]*", "rename it")
        ]
    if not isinstance(entry, dict):
        return {}, [SweepProblem(where, "a sweep must be a mapping", "give `base:` and `grid:`")]
    problems = [
        SweepProblem(f"{where}.{key}", "unknown key", f"use only {', '.join(SWEEP_KEYS)}")
        for key in entry
        if key not in SWEEP_KEYS
    ]
    base = entry.get("base")
    if base is not None and base not in samples:
        problems.append(
            SweepProblem(
                f"{where}.base",
                f"no sample {base!r} in {model}.samples",
                f"use one of {sorted(samples)} or leave `base` out for the model defaults",
            )
        )
    seeds = None
    if "seeds" in entry:
        try:
            seeds = expand_seeds(entry["seeds"], key=f"{where}.seeds")
        except SweepError as error:
            problems.extend(error.problems)
    grid = entry.get("grid")
    problems.extend(_grid_problems(grid, f"{where}.grid"))
    if problems or not isinstance(grid, dict):
        return {}, problems

    base_overrides = dict(samples[base] or {}) if base is not None else {}
    keys = list(grid)
    all_strings = {k: all(isinstance(v, str) for v in grid[k]) for k in keys}
    generated: dict[str, dict[str, Any]] = {}
    for point in itertools.product(*(grid[k] for k in keys)):
        parts = [name_part(k, v, all_strings[k]) for k, v in zip(keys, point, strict=True)]
        name = "_".join([sweep, *parts])
        if not SAMPLE_NAME.fullmatch(name):
            problems.append(
                SweepProblem(
                    f"{where}.grid",
                    f"generated name {name!r} is not a valid sample name",
                    "use values made of letters, digits, `_`, `.` and `-`",
                )
            )
            continue
        overrides = copy.deepcopy(base_overrides)
        for grid_key, value in zip(keys, point, strict=True):
            _set_path(overrides, grid_key, value)
        if seeds is not None:
            overrides["seeds"] = list(seeds)
        generated[name] = overrides
    return generated, problems


def expand_sweeps(
    model: str, sweeps: Mapping[str, Any] | None, samples: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The samples a model's `sweeps:` generates, name → overrides, in sweep and grid order.

    `samples` are the hand-written samples (name → overrides); a generated name equal to one of
    them, or to a name generated by another sweep, is an error.
    """
    if sweeps is None:
        return {}
    if not isinstance(sweeps, Mapping):
        raise SweepError(
            [SweepProblem(f"{model}.sweeps", "must be a mapping of sweep name → sweep", "fix it")]
        )
    problems: list[SweepProblem] = []
    generated: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for sweep, entry in sweeps.items():
        names, sweep_problems = _one_sweep(model, str(sweep), entry, samples)
        problems.extend(sweep_problems)
        for name, overrides in names.items():
            where = f"{model}.sweeps.{sweep}"
            if name in samples:
                problems.append(
                    SweepProblem(
                        where,
                        f"generates {name!r}, which is also a sample in {model}.samples",
                        "rename the sweep or the sample",
                    )
                )
            elif name in origin:
                problems.append(
                    SweepProblem(
                        where,
                        f"generates {name!r}, which sweep {origin[name]!r} generates too",
                        "rename one of the sweeps",
                    )
                )
            else:
                origin[name] = str(sweep)
                generated[name] = overrides
    if problems:
        raise SweepError(problems)
    return generated
