"""Typed, frozen settings of one sample, built once from the validated config.

The config's flat layout (`method`, `prune_ratio`, ... beside the model's own keys) is the JSON
form: `to_dict()` writes it and `from_dict()` reads it back, so Snakemake params, summary.json and
checkpoints all carry the same text. Standard library only (parsed at Snakefile parse time).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from dynsparse import distributions

# MNIST's image and class counts (dynsparse.blocks has them too, but imports numpy).
N_PIXELS = 784
N_CLASSES = 10

# Training images held out for validation by default (config.yaml's top-level `validation`).
DEFAULT_VALIDATION = 5_000


@dataclass(frozen=True)
class CosineSchedule:
    zero_steps: int
    phase_delay: float
    period: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "zero_steps": self.zero_steps,
            "phase_delay": self.phase_delay,
            "period": self.period,
        }


@dataclass(frozen=True)
class GmpSettings:
    """Gradual magnitude pruning: from `start` to `end` (fractions of the training steps), a
    pruning step every `every` steps (dynsparse.gmp)."""

    start: float = 0.0
    end: float = 0.75
    every: int = 100

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "every": self.every}

    @classmethod
    def from_dict(cls, gmp: Mapping[str, Any]) -> GmpSettings:
        defaults = cls()
        return cls(
            start=float(gmp.get("start", defaults.start)),
            end=float(gmp.get("end", defaults.end)),
            every=int(gmp.get("every", defaults.every)),
        )


@dataclass(frozen=True)
class RiglSettings:
    """How the sparsity pattern changes: the method and its update schedule."""

    method: str  # a key of dynsparse.methods.METHODS
    prune_ratio: float
    updates_per_epoch: int
    schedule: CosineSchedule
    # Published rule (True): only kept blocks are excluded from regrowth; False: Graphcore's.
    regrow_dropped: bool = True
    # Fraction of the updates after which the pattern is frozen (RigL's T_end; 1.0 = never).
    update_end: float = 1.0
    # Regrowth scores: mean |dense gradient| over the last N batches before an update.
    grow_batches: int = 1
    # The `gmp` key as given (None: not given; method gmp then uses GmpSettings' defaults).
    gmp: GmpSettings | None = None

    @property
    def gmp_or_default(self) -> GmpSettings:
        return self.gmp if self.gmp is not None else GmpSettings()


@dataclass(frozen=True)
class OptimizerSettings:
    name: str  # a key of dynsparse.layers.OPTIMIZERS
    args: tuple[tuple[str, float | bool], ...]  # keyword arguments, sorted by name
    learning_rate: float | None  # None: the model's original schedule

    @property
    def kwargs(self) -> dict[str, float | bool]:
        return dict(self.args)


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """What every model's sample has; each model's subclass adds its own keys."""

    model: ClassVar[str]

    seed: int
    block_size: int
    pooling: str
    rigl: RiglSettings
    optimizer: OptimizerSettings
    batch_size: int
    epochs: int
    # Train on the first N images of the seeded shuffle only; None = all 60000.
    train_samples: int | None = None
    # Held out of the training images (dynsparse.splits); 0 trains on all of them.
    validation: int = DEFAULT_VALIDATION

    # -- the JSON form -------------------------------------------------------------------------

    def _own_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        settings = {
            "seed": self.seed,
            "block_size": self.block_size,
            "pooling": self.pooling,
            "method": self.rigl.method,
            "prune_ratio": self.rigl.prune_ratio,
            "updates_per_epoch": self.rigl.updates_per_epoch,
            "cosine_schedule": self.rigl.schedule.to_dict(),
            "regrow_dropped": self.rigl.regrow_dropped,
            "update_end": self.rigl.update_end,
            "grow_batches": self.rigl.grow_batches,
            "optimizer": self.optimizer.name,
            "optimizer_args": self.optimizer.kwargs,
            "learning_rate": self.optimizer.learning_rate,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "validation": self.validation,
            **self._own_dict(),
        }
        if self.rigl.gmp is not None:
            settings["gmp"] = self.rigl.gmp.to_dict()
        if self.train_samples is not None:
            settings["train_samples"] = self.train_samples
        return settings

    def to_json(self) -> str:
        """Canonical text: Snakemake compares params by their text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def _common(settings: Mapping[str, Any]) -> dict[str, Any]:
        schedule = settings["cosine_schedule"]
        return {
            "seed": int(settings["seed"]),
            "block_size": int(settings["block_size"]),
            "pooling": str(settings["pooling"]),
            "rigl": RiglSettings(
                method=str(settings["method"]),
                prune_ratio=float(settings["prune_ratio"]),
                updates_per_epoch=int(settings["updates_per_epoch"]),
                schedule=CosineSchedule(
                    zero_steps=int(schedule["zero_steps"]),
                    phase_delay=float(schedule["phase_delay"]),
                    period=float(schedule["period"]),
                ),
                regrow_dropped=bool(settings.get("regrow_dropped", True)),
                update_end=float(settings.get("update_end", 1.0)),
                grow_batches=int(settings.get("grow_batches", 1)),
                gmp=None if settings.get("gmp") is None else GmpSettings.from_dict(settings["gmp"]),
            ),
            "optimizer": OptimizerSettings(
                name=str(settings["optimizer"]),
                args=tuple(sorted(dict(settings["optimizer_args"]).items())),
                learning_rate=None
                if settings["learning_rate"] is None
                else float(settings["learning_rate"]),
            ),
            "batch_size": int(settings["batch_size"]),
            "epochs": int(settings["epochs"]),
            "train_samples": None
            if settings.get("train_samples") is None
            else int(settings["train_samples"]),
            "validation": int(settings.get("validation", DEFAULT_VALIDATION)),
        }


@dataclass(frozen=True, kw_only=True)
class FCSettings(ModelSettings):
    """784 → hidden widths → 10, layers fc1 … fc(L+1); each sparse below density 1.

    Widths: `hidden_sizes` (any depth) or `hidden_size` (one hidden layer, the original model).
    Densities: `densities` (one per layer), or a global `density` spread over the layers by
    `distribution` (uniform, erdos_renyi, erk: dynsparse.distributions). `block_size` applies to
    every layer but the output layer, which always has blocks of 1.
    """

    model: ClassVar[str] = "fc"

    densities: tuple[float, ...] | None
    hidden_size: int | None
    droprate: float
    permute_input: str  # none | block | random
    hidden_sizes: tuple[int, ...] | None = None
    density: float | None = None
    distribution: str = "uniform"

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden layers' widths."""
        if self.hidden_sizes is not None:
            return self.hidden_sizes
        if self.hidden_size is None:
            raise ValueError("an FC sample needs hidden_size or hidden_sizes")
        return (self.hidden_size,)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(f"fc{i + 1}" for i in range(len(self.widths) + 1))

    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        """(n_in, n_out) of every layer, input to output."""
        sides = (N_PIXELS, *self.widths, N_CLASSES)
        return {name: (sides[i], sides[i + 1]) for i, name in enumerate(self.layer_names)}

    def layer_densities(self) -> dict[str, float]:
        """Every layer's density: `densities` as given, else `density` by `distribution`."""
        if self.densities is not None:
            return dict(zip(self.layer_names, self.densities, strict=True))
        if self.density is None:
            raise ValueError("an FC sample needs densities or density")
        return distributions.layer_densities(self.layer_shapes(), self.density, self.distribution)

    def layer_block_sizes(self) -> dict[str, int]:
        names = self.layer_names
        return {name: 1 if name == names[-1] else self.block_size for name in names}

    def _own_dict(self) -> dict[str, Any]:
        own: dict[str, Any] = {"droprate": self.droprate, "permute_input": self.permute_input}
        if self.densities is not None:
            own["densities"] = list(self.densities)
        if self.density is not None:
            own["density"] = self.density
            own["distribution"] = self.distribution
        if self.hidden_size is not None:
            own["hidden_size"] = self.hidden_size
        if self.hidden_sizes is not None:
            own["hidden_sizes"] = list(self.hidden_sizes)
        return own

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> FCSettings:
        densities = settings.get("densities")
        density = settings.get("density")
        hidden_size = settings.get("hidden_size")
        hidden_sizes = settings.get("hidden_sizes")
        return cls(
            **cls._common(settings),
            densities=None if densities is None else tuple(float(d) for d in densities),
            density=None if density is None else float(density),
            distribution=str(settings.get("distribution", "uniform")),
            hidden_size=None if hidden_size is None else int(hidden_size),
            hidden_sizes=None if hidden_sizes is None else tuple(int(w) for w in hidden_sizes),
            droprate=float(settings["droprate"]),
            permute_input=str(settings["permute_input"]),
        )


@dataclass(frozen=True, kw_only=True)
class TransformerSettings(ModelSettings):
    """`layers` encoder layers over the 28 image rows; every linear layer at the same sparsity."""

    model: ClassVar[str] = "transformer"

    sparsity: float
    dropout: float
    hidden_size: int
    heads: int
    qkv_size: int
    ff_size: int
    layers: int = 1

    def _own_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "sparsity": self.sparsity,
            "dropout": self.dropout,
            "hidden_size": self.hidden_size,
            "heads": self.heads,
            "qkv_size": self.qkv_size,
            "ff_size": self.ff_size,
        }

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> TransformerSettings:
        return cls(
            **cls._common(settings),
            sparsity=float(settings["sparsity"]),
            dropout=float(settings["dropout"]),
            hidden_size=int(settings["hidden_size"]),
            heads=int(settings["heads"]),
            qkv_size=int(settings["qkv_size"]),
            ff_size=int(settings["ff_size"]),
            layers=int(settings.get("layers", 1)),
        )
