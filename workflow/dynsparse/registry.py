"""The model registry: everything that differs between models, one class per model.

An entry knows its settings class, the extra config checks beyond the schema, its learning-rate
schedule, its resources for the cluster, how to label and measure its sparsity for the tables and
which inputs its connectivity pictures show. The TensorFlow model itself is the class of the same
`model_name` in dynsparse.models (`build_model`), kept apart so that the picture and table stages,
which import this module, do not depend on the model code. Adding a model means a settings class,
a model class and one entry here. In the spirit of jaxpruner's `ALGORITHM_REGISTRY`.

Importing this module is cheap (numpy only, no TensorFlow): Snakefile parse time uses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from dynsparse.distributions import DistributionError, total_density
from dynsparse.gmp import gmp_span_problem, gmp_steps
from dynsparse.methods import METHODS
from dynsparse.settings import FCSettings, ModelSettings, TransformerSettings

S = TypeVar("S", bound=ModelSettings)


# Training images when a sample sets no train_samples (dynsparse.splits.N_TRAIN_IMAGES).
ALL_TRAIN_IMAGES = 60_000


def _ceil_blocks(density: float, n_in: int, n_out: int, block: int) -> int:
    return math.ceil(density * ((n_in // block) * (n_out // block)))


def _fewest_batches_between_updates(settings: ModelSettings) -> int:
    """The smallest gap between two updates, as dynsparse.train.update_batches spaces them."""
    n_train = settings.train_samples or ALL_TRAIN_IMAGES
    per_epoch = min(n_train, ALL_TRAIN_IMAGES) // settings.batch_size
    updates = settings.rigl.updates_per_epoch
    if updates > per_epoch:
        return 0
    points = [-1] + [(u + 1) * per_epoch // updates - 1 for u in range(updates)]
    return min(b - a for a, b in zip(points, points[1:], strict=False))


def training_steps(settings: ModelSettings) -> int:
    """Training steps of the run, as dynsparse.train counts them (validation held out first)."""
    held = ALL_TRAIN_IMAGES - settings.validation
    n_train = held if settings.train_samples is None else min(settings.train_samples, held)
    return settings.epochs * (n_train // settings.batch_size)


def gmp_problems(settings: ModelSettings) -> list[str]:
    """The `gmp` key: only with method gmp; start < end; at least one pruning interval."""
    rigl_settings = settings.rigl
    if rigl_settings.method != "gmp":
        if rigl_settings.gmp is not None:
            return [
                f"gmp: is used by method gmp only, this sample's method is "
                f"{rigl_settings.method!r}; remove gmp or set method: gmp"
            ]
        return []
    gmp = rigl_settings.gmp_or_default
    if gmp.start >= gmp.end:
        return [f"gmp: start {gmp.start} must come before end {gmp.end} (fractions of training)"]
    total = training_steps(settings)
    try:
        gmp_steps(gmp, total)
    except ValueError:
        return [gmp_span_problem(gmp, total)]
    return []


def method_checks(settings: ModelSettings) -> list[str]:
    """Problems of the method keys that every model shares."""
    problems = gmp_problems(settings)
    if problems:
        return problems
    grow_batches = settings.rigl.grow_batches
    gap = _fewest_batches_between_updates(settings)
    if gap and grow_batches > gap:
        return [
            f"grow_batches: {grow_batches} is more than the {gap} batches between two updates "
            "(images per epoch / batch_size / updates_per_epoch); lower grow_batches or "
            "updates_per_epoch"
        ]
    return []


class ModelEntry(Generic[S]):
    """The model-specific parts, for a sample's typed settings `S`."""

    name: ClassVar[str]
    settings_class: type[S]
    mem_mb: ClassVar[int]  # memory a training job asks the cluster for
    minutes_per_epoch: ClassVar[int]  # runtime a training job asks for, per epoch, plus 10
    bench_steps: ClassVar[int]  # training steps the training benchmark times
    # One-core seconds of an epoch at the default widths (measured on the 2-core Zen 4): only
    # orders the training jobs, longest first (rules/train.smk), never limits one.
    seconds_per_epoch: ClassVar[float]
    # What the connectivity pictures show per input: a key of dynsparse.extract.INPUT_VIEWS.
    picture_inputs: ClassVar[str]

    def parse(self, settings: Mapping[str, Any]) -> S:
        return self.settings_class.from_dict(settings)

    def runtime_min(self, settings: S) -> int:
        return 10 + self.minutes_per_epoch * settings.epochs

    def estimated_seconds(self, settings: S) -> float:
        """A rough one-core estimate of a training job's time, to start the long ones first."""
        return self.seconds_per_epoch * settings.epochs

    def checks(self, settings: S) -> list[str]:
        """Problems the schema cannot see (block sizes that do not divide a layer, ...)."""
        raise NotImplementedError

    def target_density(self, settings: S, layer_name: str) -> float:
        """The density a sparse layer ends training at (GMP prunes towards it)."""
        raise NotImplementedError

    def dense_settings(self, settings: S) -> S:
        """The same sample with every layer dense (SNIP's dense twin)."""
        raise NotImplementedError

    def learning_rate(self, settings: S, epoch: int) -> float:
        """The learning rate of `epoch` (0-based)."""
        raise NotImplementedError

    def is_dense(self, settings: S) -> bool:
        raise NotImplementedError

    def sparsity_label(self, settings: S) -> str:
        raise NotImplementedError

    def weight_density(self, settings: S) -> float:
        """Nominal share of the weights held, over the layers that can be sparse."""
        raise NotImplementedError

    def bench_sparsity(self, settings: S, held_fraction: float) -> float:
        """The sparsity the training benchmark reports, given the share of weights held."""
        return 1.0 - held_fraction


class FCEntry(ModelEntry[FCSettings]):
    name = "fc"
    settings_class = FCSettings
    mem_mb = 3000
    minutes_per_epoch = 2
    # 7 timing rounds of 250 steps: a timed call runs as many steps as a training call does
    # (train.CHUNK_BATCHES), so the fixed cost of a call (0.4-1.5 ms here) weighs on a step as it
    # does in training; 57-step rounds added ~9-25 µs to every step of ~75-350 µs.
    bench_steps = 1750
    seconds_per_epoch = 1.3  # 17-36 s for 20 epochs
    picture_inputs = "pixels"  # the 28×28 image, the input permutation undone

    def checks(self, settings: FCSettings) -> list[str]:
        problems = method_checks(settings) + self._width_and_density_problems(settings)
        if problems:
            return problems
        densities = settings.layer_densities()
        shapes = settings.layer_shapes()
        block_sizes = settings.layer_block_sizes()
        sides = ("input size 784", *self._width_names(settings), "output size 10")
        for i, name in enumerate(settings.layer_names):
            (n_in, n_out), bs, density = shapes[name], block_sizes[name], densities[name]
            if density >= 1:
                continue
            edges = [(sides[i + 1], n_out)] if i else [(sides[0], n_in), (sides[1], n_out)]
            for what, size in edges:
                if size % bs:
                    problems.append(
                        f"block_size: {bs} does not divide {name}'s {what} ({size}); use a block "
                        "size that divides 784 and every hidden width"
                    )
            if not n_in % bs and not n_out % bs and _ceil_blocks(density, n_in, n_out, bs) < 1:
                problems.append(f"density {density} leaves no block in a {n_in}x{n_out} layer")
        return problems

    @staticmethod
    def _width_names(settings: FCSettings) -> list[str]:
        if settings.hidden_sizes is None:
            return ["hidden_size"]
        return [f"hidden_sizes[{i}]" for i in range(len(settings.hidden_sizes))]

    @staticmethod
    def _width_and_density_problems(settings: FCSettings) -> list[str]:
        if settings.hidden_size is not None and settings.hidden_sizes is not None:
            return ["hidden_sizes: give hidden_sizes or hidden_size, not both"]
        n_layers = len(settings.widths) + 1
        if settings.densities is not None and settings.density is not None:
            return ["density: give a global density or per-layer densities, not both"]
        if settings.densities is None and settings.density is None:
            return ["densities: give per-layer densities or a global density"]
        if settings.density is None and settings.distribution != "uniform":
            return [
                f"distribution: {settings.distribution} spreads a global density; give density "
                "(and drop densities) or drop distribution"
            ]
        if settings.densities is not None and len(settings.densities) != n_layers:
            return [
                f"densities: {len(settings.densities)} values for {n_layers} layers "
                f"(fc1 … fc{n_layers}); give one density per layer"
            ]
        if settings.density is not None:
            try:
                settings.layer_densities()
            except DistributionError as error:
                return [f"density: {error}"]
        return []

    def target_density(self, settings: FCSettings, layer_name: str) -> float:
        return settings.layer_densities()[layer_name]

    def dense_settings(self, settings: FCSettings) -> FCSettings:
        n_layers = len(settings.layer_names)
        return dataclasses.replace(settings, densities=(1.0,) * n_layers, density=None)

    def learning_rate(self, settings: FCSettings, epoch: int) -> float:
        """None gives the original's: Adam 0.002·16/batch constant; Momentum and GradientDescent
        0.02·16/batch stepped down at 20/40/60/80 % of training. A number replaces the base."""
        base = settings.optimizer.learning_rate
        if settings.optimizer.name == "Adam":
            return (0.002 * 16 / settings.batch_size) if base is None else base
        steps = (1.0, 0.5, 0.25, 0.05, 0.005)
        start = (0.02 * 16 / settings.batch_size) if base is None else base
        progress = epoch / settings.epochs
        return start * steps[min(int(math.floor(progress / 0.2 + 1e-9)), 4)]

    def is_dense(self, settings: FCSettings) -> bool:
        return all(d >= 1.0 for d in settings.layer_densities().values())

    def sparsity_label(self, settings: FCSettings) -> str:
        if settings.densities is None:
            return f"density {settings.density:g} {settings.distribution}"
        return "densities " + "/".join(f"{d:g}" for d in settings.densities)

    def weight_density(self, settings: FCSettings) -> float:
        return total_density(settings.layer_shapes(), settings.layer_densities())


class TransformerEntry(ModelEntry[TransformerSettings]):
    name = "transformer"
    settings_class = TransformerSettings
    mem_mb = 6000
    minutes_per_epoch = 6
    # 7 timing rounds of 20 steps: a call's fixed cost (~1-1.5 ms) added ~0.2-0.3 ms to each step
    # of the 5-step calls timed before (~2 % of dense, ~3 % of sparsity 0.9); training calls run
    # up to train.CHUNK_BATCHES steps, cut at the RigL updates (every 375 steps by default).
    bench_steps = 140
    seconds_per_epoch = 33.0  # 88-147 s for 3 or 4 epochs
    picture_inputs = "features"  # the 28 features of a row token (padding apart)

    def checks(self, settings: TransformerSettings) -> list[str]:
        block = settings.block_size
        if settings.sparsity == 0:
            return method_checks(settings)
        if block > 1 and METHODS[settings.rigl.method].prunes_at_init:
            return [
                f"block_size: {block} pads the transformer's features and head, so its dense "
                f"twin has other shapes; {settings.rigl.method} needs block_size 1 here"
            ]
        widths = {
            "hidden_size": settings.hidden_size,
            "heads*qkv_size": settings.heads * settings.qkv_size,
            "ff_size": settings.ff_size,
        }
        problems = method_checks(settings) + [
            f"block_size: {block} does not divide {name} ({width}); every sparse layer's sides "
            "must be multiples of the block size"
            for name, width in widths.items()
            if width % block
        ]
        n_in, n_out, density = settings.hidden_size, settings.ff_size, 1 - settings.sparsity
        divides = not n_in % block and not n_out % block
        if divides and _ceil_blocks(density, n_in, n_out, block) < 1:
            problems.append(f"density {density} leaves no block in a {n_in}x{n_out} layer")
        return problems

    def target_density(self, settings: TransformerSettings, layer_name: str) -> float:
        return 1.0 - settings.sparsity

    def dense_settings(self, settings: TransformerSettings) -> TransformerSettings:
        return dataclasses.replace(settings, sparsity=0.0)

    def learning_rate(self, settings: TransformerSettings, epoch: int) -> float:
        """None gives the original's 2e-3/batch, ×1, 0.5, 0.3, 0.1 at quarters of training."""
        base = settings.optimizer.learning_rate
        start = (2e-3 / settings.batch_size) if base is None else base
        factors = (1.0, 0.5, 0.3, 0.1)
        progress = epoch / settings.epochs
        return start * factors[min(int(math.floor(progress / 0.25 + 1e-9)), 3)]

    def is_dense(self, settings: TransformerSettings) -> bool:
        return settings.sparsity <= 0.0

    def sparsity_label(self, settings: TransformerSettings) -> str:
        return f"sparsity {settings.sparsity:g}"

    def weight_density(self, settings: TransformerSettings) -> float:
        return 1.0 - settings.sparsity

    def bench_sparsity(self, settings: TransformerSettings, held_fraction: float) -> float:
        return settings.sparsity  # nominal: the padded head would blur the count


MODELS: dict[str, ModelEntry[Any]] = {
    entry.name: entry for entry in (FCEntry(), TransformerEntry())
}


def model_entry(name: str) -> ModelEntry[Any]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def entry_of(settings: ModelSettings) -> ModelEntry[Any]:
    return model_entry(settings.model)


def parse_settings(model: str, settings: Mapping[str, Any]) -> ModelSettings:
    """Typed settings of a `model` sample from their JSON form (validated by dynsparse.config)."""
    parsed: ModelSettings = model_entry(model).parse(settings)
    return parsed


def parse_settings_json(model: str, text: str) -> ModelSettings:
    return parse_settings(model, json.loads(text))
