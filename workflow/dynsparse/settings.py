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
class RiglSettings:
    """How the sparsity pattern changes: the method and its update schedule."""

    method: str  # a key of dynsparse.methods.METHODS
    prune_ratio: float
    updates_per_epoch: int
    schedule: CosineSchedule


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
            "optimizer": self.optimizer.name,
            "optimizer_args": self.optimizer.kwargs,
            "learning_rate": self.optimizer.learning_rate,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "validation": self.validation,
            **self._own_dict(),
        }
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
    """784 → hidden → 10; fc1 (block_size) and fc2 (always 1) sparse below density 1."""

    model: ClassVar[str] = "fc"

    densities: tuple[float, float]
    hidden_size: int
    droprate: float
    permute_input: str  # none | block | random

    def _own_dict(self) -> dict[str, Any]:
        return {
            "densities": list(self.densities),
            "hidden_size": self.hidden_size,
            "droprate": self.droprate,
            "permute_input": self.permute_input,
        }

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> FCSettings:
        d1, d2 = (float(d) for d in settings["densities"])
        return cls(
            **cls._common(settings),
            densities=(d1, d2),
            hidden_size=int(settings["hidden_size"]),
            droprate=float(settings["droprate"]),
            permute_input=str(settings["permute_input"]),
        )


@dataclass(frozen=True, kw_only=True)
class TransformerSettings(ModelSettings):
    """One encoder layer over the 28 image rows; every linear layer at the same sparsity."""

    model: ClassVar[str] = "transformer"

    sparsity: float
    dropout: float
    hidden_size: int
    heads: int
    qkv_size: int
    ff_size: int

    def _own_dict(self) -> dict[str, Any]:
        return {
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
        )
