"""Per-epoch checkpoints of one training run: save, find the latest, restore.

After every epoch the store writes, under `checkpoints/<settings hash>/`: the TensorFlow variables
(model, optimizer slots, dropout generator), the host state (step, updates done, the regrowth
generator), the history so far and one chunk file of the epoch's new records (records are large
and grow by a few per epoch: appending a chunk is cheaper than rewriting them all). `state.json`
is written last, so its presence marks a checkpoint complete. The hash covers the model, the
settings and the code of every module the training stage imports (found by dynsparse.codedeps),
so a checkpoint is never resumed by different code or settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynsparse.atomic import atomic_path, write_json
from dynsparse.codedeps import library_modules
from dynsparse.records import HistoryBuilder, RecordsBuilder
from dynsparse.settings import ModelSettings

CHECKPOINT_FORMAT = 1
PACKAGE_DIR = Path(__file__).resolve().parent
# The module whose imports (direct and indirect) make up the training code.
TRAINING_ENTRY = PACKAGE_DIR / "train.py"
ATTEMPTS_LOG = "attempts.log"


def training_code_files() -> list[Path]:
    return sorted({TRAINING_ENTRY, *map(Path, library_modules(TRAINING_ENTRY, PACKAGE_DIR))})


def settings_hash(settings: ModelSettings) -> str:
    """Identifies a checkpoint: the model, the settings and the training code."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"format": CHECKPOINT_FORMAT, "model": settings.model, "settings": settings.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    )
    for module in training_code_files():
        digest.update(module.name.encode())
        digest.update(module.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class HostState:
    """What the checkpoint holds besides TensorFlow variables."""

    epochs_done: int = 0
    step: int = 0
    updates_done: int = 0
    pruned_fraction: float = 0.0
    train_seconds: float = 0.0
    regrow_rng_state: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Restored:
    host: HostState
    history: HistoryBuilder


class CheckpointStore:
    """The checkpoints of one sample in `out_dir/checkpoints/<key>/`; other keys are stale."""

    def __init__(self, out_dir: Path, key: str, variables: Any) -> None:
        self.root = out_dir / "checkpoints"
        self.directory = self.root / key
        self.variables = variables  # a tf.train.Checkpoint
        if self.root.exists():
            for stale in self.root.iterdir():
                if stale.name != key:
                    shutil.rmtree(stale, ignore_errors=True)

    @property
    def attempts_log(self) -> Path:
        """The log lines of earlier attempts of this run (Snakemake truncates the job's log)."""
        return self.directory / ATTEMPTS_LOG

    def _records_chunk(self, epochs_done: int) -> Path:
        return self.directory / f"records-{epochs_done:04d}.npz"

    def save(
        self, host: HostState, records: RecordsBuilder, records_before: int, history: HistoryBuilder
    ) -> None:
        epoch_dir = self.directory / f"epoch-{host.epochs_done:04d}"
        if epoch_dir.exists():
            shutil.rmtree(epoch_dir)
        epoch_dir.mkdir(parents=True)
        with atomic_path(self._records_chunk(host.epochs_done), suffix=".npz") as tmp:
            # Uncompressed (fast); numpy's stub types **arrays as its own keywords.
            np.savez(tmp, **records.arrays(start=records_before))  # type: ignore[arg-type]
        self.variables.write(str(epoch_dir / "variables"))
        with atomic_path(epoch_dir / "history.npz", suffix=".npz") as tmp:
            np.savez(tmp, **history.arrays())  # type: ignore[arg-type]
        # Written last: its presence marks the checkpoint complete.
        write_json(epoch_dir / "state.json", {**host.to_json(), "records": len(records)})
        for older in self.directory.glob("epoch-*"):
            if older != epoch_dir:
                shutil.rmtree(older, ignore_errors=True)

    def latest(self) -> Path | None:
        if not self.directory.exists():
            return None
        complete = sorted(p for p in self.directory.glob("epoch-*") if (p / "state.json").exists())
        return complete[-1] if complete else None

    def restore(self, records: RecordsBuilder) -> Restored | None:
        """Load the latest complete checkpoint into the variables and `records` (which must be
        empty); None when there is none, and then no earlier attempt is kept either."""
        found = self.latest()
        if found is None:
            shutil.rmtree(self.directory, ignore_errors=True)
            return None
        state = json.loads((found / "state.json").read_text())
        n_records = state.pop("records")
        for epochs_done in range(1, state["epochs_done"] + 1):
            with np.load(self._records_chunk(epochs_done), allow_pickle=False) as saved:
                records.extend(saved)
        if len(records) != n_records:
            raise RuntimeError(f"checkpoint {found}: {len(records)} records, expected {n_records}")
        with np.load(found / "history.npz", allow_pickle=False) as saved:
            history = HistoryBuilder.from_arrays(saved)
        self.variables.read(str(found / "variables")).assert_existing_objects_matched()
        return Restored(HostState(**state), history)

    def clear(self) -> None:
        """A finished run needs no checkpoint: a later rerun starts from scratch."""
        shutil.rmtree(self.root, ignore_errors=True)
