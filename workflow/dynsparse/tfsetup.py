"""Configure TensorFlow once per process, before it runs any op."""

from __future__ import annotations

import gc
import os
import sys
import warnings
from types import ModuleType

_configured_threads: int | None = None


def configure_tensorflow(threads: int, deterministic: bool = True) -> None:
    """Thread pools of `threads` threads, quiet C++ logs, deterministic ops.

    Must run before TensorFlow executes anything: the thread pools cannot be resized afterwards.
    The first call wins: a later call (say a second test in one pytest process) with another
    `threads` only warns, since the pools are fixed by then.
    """
    global _configured_threads
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if _configured_threads is not None:
        if _configured_threads != threads:
            warnings.warn(
                f"TensorFlow already runs {_configured_threads} threads; {threads} ignored",
                RuntimeWarning,
                stacklevel=2,
            )
        return
    tf = import_tensorflow()

    tf.get_logger().setLevel("ERROR")
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() != threads:
        try:
            threading.set_intra_op_parallelism_threads(threads)
            threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as error:  # TensorFlow ran an op before this call
            warnings.warn(f"thread pools not set: {error}", RuntimeWarning, stacklevel=2)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    _configured_threads = threads


# TensorFlow's import loads this Keras module eagerly (to register Keras optimizers for
# SavedModel), inside a try that gives up on ImportError; nothing here uses Keras.
KERAS_EAGER_MODULE = "keras.src.optimizers"


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, with Python's cyclic garbage collector paused during the import and
    everything alive afterwards frozen (`gc.freeze`), and without Keras: ~2.6 s less CPU per
    process on a Zen 4.

    The import creates several hundred thousand long-lived objects (modules, classes, functions)
    and no garbage worth collecting; every full collection walks them all, and so does the
    interpreter's last collection at exit (~1 s after TensorFlow was imported, ~0.1 s with them
    frozen). TensorFlow also imports Keras eagerly (~0.9 s), though `tf.keras` loads it lazily
    anyway: a None entry for KERAS_EAGER_MODULE makes that one import fail at once, and removing
    the entry afterwards leaves `tf.keras` working for whoever wants it. The pipeline imports
    TensorFlow in some 25 processes. Nothing numerical changes.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet C++ logs
    enabled = gc.isenabled()
    gc.disable()
    skip_keras = KERAS_EAGER_MODULE not in sys.modules
    if skip_keras:
        sys.modules[KERAS_EAGER_MODULE] = None  # type: ignore[assignment]
    try:
        import tensorflow as tf
    finally:
        if skip_keras:
            sys.modules.pop(KERAS_EAGER_MODULE, None)  # the None entry: nothing could replace it
        if enabled:
            gc.enable()
    gc.freeze()
    return tf
