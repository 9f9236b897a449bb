"""TensorBoard scalars of one training run: one event file per sample, no step written twice.

A fresh start removes the folder's old event files. A resumed run keeps the events up to the
restored step (rewritten into one new file) and drops those a killed attempt wrote after it, so
the resumed steps are not shown twice.

tensorflow-cpu ships without the tensorboard package that `tf.summary.scalar` needs; the same
scalar events (scalars plugin metadata) are written with the core summary op instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

EVENTS_GLOB = "events.out.tfevents.*"
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def read_scalars(directory: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the folder's event files, in file order."""
    scalars = []
    for path in sorted(directory.glob(EVENTS_GLOB)):
        try:
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    number = (
                        float(tf.make_ndarray(value.tensor))
                        if value.HasField("tensor")
                        else value.simple_value
                    )
                    scalars.append((int(event.step), value.tag, number))
        except tf.errors.DataLossError:  # the tail of a file a killed run was writing
            continue
    return scalars


class Board:
    def __init__(self, directory: Path, resume_step: int | None) -> None:
        """`resume_step` None: a fresh start; else the step of the restored checkpoint."""
        kept = [] if resume_step is None or not directory.exists() else read_scalars(directory)
        shutil.rmtree(directory, ignore_errors=True)
        self.writer = tf.summary.create_file_writer(str(directory))
        for step, tag, value in kept:
            if step <= resume_step:  # type: ignore[operator]
                self.scalars(step, {tag: value})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
